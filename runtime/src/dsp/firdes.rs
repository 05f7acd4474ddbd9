//! FIR filter design, following GNU Radio's `gr::filter::firdes` and the
//! default taps of its `rational_resampler`.
//!
//! What is reproduced, and how exactly:
//!
//! - [`low_pass`] is `firdes::low_pass(gain, samp_rate, cutoff, transition,
//!   window, beta)`: the tap count comes from the window's maximum attenuation
//!   ([`compute_ntaps`]: `int(att · fs / (22 · transition))`, made odd), the
//!   taps are the windowed sinc `sin(n·ω₀)/(n·π)·w[n]` (`ω₀/π·w[0]` at the
//!   centre) with `ω₀ = 2π·cutoff/fs`, and the taps are scaled so that their
//!   sum (the DC gain) is `gain`. As in GNU Radio the window and the taps are
//!   single precision (`std::vector<float>`): each value is computed in double
//!   precision and rounded to `f32` at the same points, and the normalisation
//!   sum is accumulated in double from the rounded taps. The Hamming, Hann and
//!   rectangular windows therefore match GNU Radio bit for bit; GNU Radio
//!   evaluates the Blackman and Blackman–Harris windows with `cosf` in single
//!   precision, so those can differ from it in the last bit.
//! - [`kaiser`] is `fft::window::kaiser(ntaps, beta)`:
//!   `w[i] = I₀(β·√(1 − (2i/(N−1) − 1)²)) / I₀(β)`, with the end points set to
//!   `1/I₀(β)` exactly, and [`bessel_i0`] is GNU Radio's `Izero`: the power
//!   series `Σ ((x/2)^k / k!)²`, summed until a term falls below `1e−21` of the
//!   sum. Its maximum attenuation (for sizing) is `β/0.1102 + 8.7` dB.
//! - [`resampler_taps`] is `design_resampler_filter` of GNU Radio's
//!   `rational_resampler`: a Kaiser (β = 7) low-pass of gain `I` at sample rate
//!   `I`, whose transition band is `0.5 − fractional_bw` wide and ends at the
//!   Nyquist frequency of the lower of the input and output rates (scaled by
//!   `I/D` when decimating). The intermediate values are `f32` as in GNU Radio.
//!
//! Designs are refused (with a sentence saying why) when the parameters are
//! out of range, as GNU Radio's `sanity_check_1f` does, and when they would
//! need more than [`MAX_TAPS`] taps.

use std::f64::consts::PI;

use super::window::Window;

/// The most taps a design may have (a narrow transition band at a high sample
/// rate would otherwise ask for millions); the model's, which sizes a
/// `low_pass_filter`'s history with the same arithmetic.
pub use flowmesh_model::firdes::MAX_TAPS;

/// A window for filter design: one of the named windows, or Kaiser with its β.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DesignWindow {
    Named(Window),
    Kaiser { beta: f64 },
}

impl From<Window> for DesignWindow {
    fn from(w: Window) -> Self {
        DesignWindow::Named(w)
    }
}

impl DesignWindow {
    /// `n` window coefficients, rounded to `f32` as GNU Radio's windows are.
    pub fn coefficients(self, n: usize) -> Vec<f32> {
        match self {
            DesignWindow::Named(w) => w.coefficients(n).into_iter().map(|c| c as f32).collect(),
            DesignWindow::Kaiser { beta } => {
                kaiser(n, beta).into_iter().map(|c| c as f32).collect()
            }
        }
    }

    /// Maximum stopband attenuation in dB, used to size designs.
    pub fn max_attenuation(self) -> f64 {
        match self {
            DesignWindow::Named(w) => w.max_attenuation(),
            DesignWindow::Kaiser { beta } => beta / 0.1102 + 8.7,
        }
    }
}

/// The modified Bessel function of the first kind, order 0, by GNU Radio's
/// series (`fft::window::Izero`): `Σ_k ((x/2)^k / k!)²`, stopping after the
/// first term smaller than `1e−21` times the running sum.
pub fn bessel_i0(x: f64) -> f64 {
    const EPSILON: f64 = 1e-21;
    let half = x / 2.0;
    let mut sum = 1.0;
    let mut u = 1.0;
    let mut n = 1.0;
    loop {
        let mut t = half / n;
        n += 1.0;
        t *= t;
        u *= t;
        sum += u;
        // A NaN argument ends the loop too.
        if u < EPSILON * sum || u.is_nan() {
            return sum;
        }
    }
}

/// The Kaiser window of `n` points with shape `beta` (GNU Radio's
/// `fft::window::kaiser`), in double precision. β must not be negative.
pub fn kaiser(n: usize, beta: f64) -> Vec<f64> {
    if n == 0 {
        return vec![];
    }
    let ibeta = 1.0 / bessel_i0(beta);
    let mut w = vec![ibeta; n];
    if n > 2 {
        let inm1 = 1.0 / (n - 1) as f64;
        for (i, c) in w.iter_mut().enumerate().take(n - 1).skip(1) {
            let t = 2.0 * i as f64 * inm1 - 1.0;
            *c = bessel_i0(beta * (1.0 - t * t).sqrt()) * ibeta;
        }
    }
    w
}

/// The tap count GNU Radio's `firdes::compute_ntaps` picks:
/// `int(max_attenuation · samp_rate / (22 · transition))`, made odd (the
/// model's [`flowmesh_model::firdes::compute_ntaps`], which the catalog also
/// uses for a `low_pass_filter`'s history).
pub fn compute_ntaps(
    samp_rate: f64,
    transition: f64,
    window: DesignWindow,
) -> Result<usize, String> {
    flowmesh_model::firdes::compute_ntaps(window.max_attenuation(), samp_rate, transition)
}

fn check_low_pass(samp_rate: f64, cutoff: f64, transition: f64) -> Result<(), String> {
    if !(samp_rate > 0.0 && samp_rate.is_finite()) {
        return Err(format!(
            "the sample rate must be above 0 Hz, got {samp_rate}"
        ));
    }
    if !(cutoff > 0.0 && cutoff <= samp_rate / 2.0) {
        return Err(format!(
            "the cutoff must be above 0 Hz and at most half the sample rate ({} Hz), got {cutoff}",
            samp_rate / 2.0
        ));
    }
    if !(transition > 0.0 && transition.is_finite()) {
        return Err(format!(
            "the transition width must be above 0 Hz, got {transition}"
        ));
    }
    Ok(())
}

/// GNU Radio's `firdes::low_pass`: a windowed-sinc low-pass with `cutoff` at
/// the middle of a transition band `transition` wide, DC gain `gain`.
pub fn low_pass(
    gain: f64,
    samp_rate: f64,
    cutoff: f64,
    transition: f64,
    window: DesignWindow,
) -> Result<Vec<f32>, String> {
    check_low_pass(samp_rate, cutoff, transition)?;
    if let DesignWindow::Kaiser { beta } = window {
        if beta.is_nan() || beta < 0.0 {
            return Err(format!("the Kaiser β must not be negative, got {beta}"));
        }
    }
    let ntaps = compute_ntaps(samp_rate, transition, window)?;
    let w = window.coefficients(ntaps);
    let m = (ntaps - 1) / 2;
    let fwt0 = 2.0 * PI * cutoff / samp_rate;
    let mut taps = vec![0f32; ntaps];
    for (i, t) in taps.iter_mut().enumerate() {
        let n = i as f64 - m as f64;
        *t = if i == m {
            (fwt0 / PI * w[i] as f64) as f32
        } else {
            ((n * fwt0).sin() / (n * PI) * w[i] as f64) as f32
        };
    }
    let mut fmax = taps[m] as f64;
    for t in &taps[m + 1..] {
        fmax += 2.0 * *t as f64;
    }
    if !(fmax.is_finite() && fmax != 0.0) {
        return Err("the design has no gain at 0 Hz and cannot be normalised".into());
    }
    let g = gain / fmax;
    for t in taps.iter_mut() {
        *t = (*t as f64 * g) as f32;
    }
    Ok(taps)
}

/// The taps GNU Radio's `rational_resampler` designs when given none
/// (`design_resampler_filter`), for the already-reduced `interpolation` and
/// `decimation`: `low_pass(I, I, mid, width, Kaiser β = 7)` where, with
/// `r = I/D`, `width = 0.5 − fractional_bw` and `mid = 0.5 − width/2` when
/// `r ≥ 1`, else `width = r·(0.5 − fractional_bw)` and `mid = r·0.5 − width/2`.
pub fn resampler_taps(
    interpolation: u64,
    decimation: u64,
    fractional_bw: f64,
) -> Result<Vec<f32>, String> {
    if interpolation == 0 || decimation == 0 {
        return Err("interpolation and decimation must be at least 1".into());
    }
    if !(fractional_bw > 0.0 && fractional_bw < 0.5) {
        return Err(format!(
            "fractional_bw must be above 0 and below 0.5, got {fractional_bw}"
        ));
    }
    // Single precision, as in GNU Radio's C++ design.
    let beta = 7.0f32;
    let halfband = 0.5f32;
    let rate = interpolation as f32 / decimation as f32;
    let fbw = fractional_bw as f32;
    let (width, mid) = if rate >= 1.0 {
        let width = halfband - fbw;
        (width, (halfband as f64 - width as f64 / 2.0) as f32)
    } else {
        let width = rate * (halfband - fbw);
        (
            width,
            ((rate * halfband) as f64 - width as f64 / 2.0) as f32,
        )
    };
    low_pass(
        interpolation as f64,
        interpolation as f64,
        mid as f64,
        width as f64,
        DesignWindow::Kaiser { beta: beta as f64 },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bessel_i0_matches_known_values() {
        // I0(0) = 1, I0(1) = 1.2660658777520082, I0(7) = 168.59390851028968.
        assert_eq!(bessel_i0(0.0), 1.0);
        assert!((bessel_i0(1.0) - 1.266_065_877_752_008_2).abs() < 1e-15);
        assert!((bessel_i0(7.0) / 168.593_908_510_289_68 - 1.0).abs() < 1e-14);
    }

    #[test]
    fn kaiser_is_symmetric_and_peaks_at_one() {
        let w = kaiser(21, 7.0);
        assert_eq!(w.len(), 21);
        for i in 0..21 {
            assert!((w[i] - w[20 - i]).abs() < 1e-15);
        }
        assert!((w[10] - 1.0).abs() < 1e-15);
        assert!((w[0] - 1.0 / bessel_i0(7.0)).abs() < 1e-18);
        assert_eq!(kaiser(1, 7.0).len(), 1);
    }

    #[test]
    fn ntaps_like_gnuradio() {
        // 53 · 1000 / (22 · 100) = 24.09 → 24 → 25.
        let h = DesignWindow::Named(Window::Hamming);
        assert_eq!(compute_ntaps(1000.0, 100.0, h).unwrap(), 25);
        // 53 · 1e6 / (22 · 5e4) = 48.18 → 48 → 49.
        assert_eq!(compute_ntaps(1e6, 5e4, h).unwrap(), 49);
        assert!(compute_ntaps(1e9, 1e-9, h).is_err());
    }

    #[test]
    fn low_pass_has_unit_dc_gain_and_is_symmetric() {
        let t = low_pass(1.0, 1000.0, 100.0, 100.0, Window::Hamming.into()).unwrap();
        assert_eq!(t.len(), 25);
        let s: f64 = t.iter().map(|&x| x as f64).sum();
        assert!((s - 1.0).abs() < 1e-6);
        for i in 0..25 {
            assert_eq!(t[i], t[24 - i]);
        }
        assert!(low_pass(1.0, 1000.0, 600.0, 100.0, Window::Hamming.into()).is_err());
        assert!(low_pass(1.0, 1000.0, 0.0, 100.0, Window::Hamming.into()).is_err());
    }

    #[test]
    fn resampler_designs() {
        // 3/2: width 0.1, 72.22 · 3 / 2.2 = 98.5 → 99 taps, gain 3.
        let t = resampler_taps(3, 2, 0.4).unwrap();
        assert_eq!(t.len(), 99);
        let s: f64 = t.iter().map(|&x| x as f64).sum();
        assert!((s - 3.0).abs() < 1e-5);
        // 2/5: width 0.04, 72.22 · 2 / 0.88 = 164.1 → 165 taps.
        assert_eq!(resampler_taps(2, 5, 0.4).unwrap().len(), 165);
        assert!(resampler_taps(2, 5, 0.5).is_err());
    }
}
