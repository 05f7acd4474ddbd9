//! Filter-design arithmetic that the catalog needs without designing a
//! filter: how many taps GNU Radio's `firdes` gives a windowed low-pass
//! (a `low_pass_filter`'s history is that count less one). The runtime's
//! filter design (`runtime/src/dsp/firdes.rs`) sizes its designs with these
//! same functions.

/// The most taps a design may have (a narrow transition band at a high sample
/// rate would otherwise ask for millions).
pub const MAX_TAPS: usize = 1 << 20;

/// Maximum stopband attenuation in dB of a design window by its catalog name
/// (`hamming`, `hann`, `blackman`, `blackman_harris`, `rectangular`), as GNU
/// Radio's `fft::window::max_attenuation` gives it; `None` for another name.
pub fn window_max_attenuation(name: &str) -> Option<f64> {
    Some(match name {
        "rectangular" => 21.0,
        "hamming" => 53.0,
        "hann" => 44.0,
        "blackman" => 74.0,
        "blackman_harris" => 92.0,
        _ => return None,
    })
}

/// The tap count GNU Radio's `firdes::compute_ntaps` picks for a window of
/// maximum attenuation `max_attenuation` dB:
/// `int(max_attenuation · samp_rate / (22 · transition))`, made odd; an
/// error past [`MAX_TAPS`].
pub fn compute_ntaps(
    max_attenuation: f64,
    samp_rate: f64,
    transition: f64,
) -> Result<usize, String> {
    let n = (max_attenuation * samp_rate / (22.0 * transition)).trunc();
    if n.is_nan() || n >= MAX_TAPS as f64 {
        return Err(format!(
            "the design needs about {n:.0} taps, more than the limit of {MAX_TAPS}"
        ));
    }
    let n = n.max(0.0) as usize;
    Ok(if n.is_multiple_of(2) { n + 1 } else { n })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_counts_are_odd_and_follow_the_attenuation() {
        // Hamming: 53 · 1e6 / (22 · 1e5) = 24.09 → 24 → 25.
        assert_eq!(compute_ntaps(53.0, 1e6, 1e5), Ok(25));
        // Blackman: 74 · 1e6 / (22 · 1e5) = 33.6 → 33, already odd.
        assert_eq!(compute_ntaps(74.0, 1e6, 1e5), Ok(33));
        assert!(compute_ntaps(53.0, 1e9, 1.0).unwrap_err().contains("limit"));
        assert_eq!(window_max_attenuation("hann"), Some(44.0));
        assert_eq!(window_max_attenuation("kaiser"), None);
    }
}
