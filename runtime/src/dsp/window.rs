//! Window functions, with GNU Radio's definitions (gr::fft::window).

/// A window kind by its catalog name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    Rectangular,
    Hamming,
    Hann,
    Blackman,
    BlackmanHarris,
}

impl Window {
    /// Parses a catalog name (`hamming`, `hann`, `blackman`, `blackman_harris`, `rectangular`).
    pub fn parse(name: &str) -> Option<Window> {
        Some(match name {
            "rectangular" => Window::Rectangular,
            "hamming" => Window::Hamming,
            "hann" => Window::Hann,
            "blackman" => Window::Blackman,
            "blackman_harris" => Window::BlackmanHarris,
            _ => return None,
        })
    }

    /// `n` window coefficients. Symmetric (denominator n−1) as GNU Radio's
    /// filter-design windows are.
    pub fn coefficients(self, n: usize) -> Vec<f64> {
        if n == 1 {
            return vec![1.0];
        }
        let m = (n - 1) as f64;
        let cos = |k: f64, i: usize| (k * std::f64::consts::PI * i as f64 / m).cos();
        (0..n)
            .map(|i| match self {
                Window::Rectangular => 1.0,
                Window::Hamming => 0.54 - 0.46 * cos(2.0, i),
                Window::Hann => 0.5 - 0.5 * cos(2.0, i),
                Window::Blackman => 0.42 - 0.5 * cos(2.0, i) + 0.08 * cos(4.0, i),
                Window::BlackmanHarris => {
                    0.35875 - 0.48829 * cos(2.0, i) + 0.14128 * cos(4.0, i) - 0.01168 * cos(6.0, i)
                }
            })
            .collect()
    }

    /// The catalog name ([`Window::parse`] reads it back).
    pub fn name(self) -> &'static str {
        match self {
            Window::Rectangular => "rectangular",
            Window::Hamming => "hamming",
            Window::Hann => "hann",
            Window::Blackman => "blackman",
            Window::BlackmanHarris => "blackman_harris",
        }
    }

    /// Maximum attenuation in dB, used by GNU Radio's firdes to size filters
    /// (`fft::window::max_attenuation`; the model's table, which also sizes a
    /// `low_pass_filter`'s history).
    pub fn max_attenuation(self) -> f64 {
        flowmesh_model::firdes::window_max_attenuation(self.name())
            .expect("the model knows every window's attenuation")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_and_peaked() {
        for w in [
            Window::Hamming,
            Window::Hann,
            Window::Blackman,
            Window::BlackmanHarris,
        ] {
            let c = w.coefficients(65);
            for i in 0..65 {
                assert!((c[i] - c[64 - i]).abs() < 1e-12);
            }
            assert!((c[32] - 1.0).abs() < 1e-9, "{w:?} peak {}", c[32]);
        }
        assert!((Window::Hamming.coefficients(5)[0] - 0.08).abs() < 1e-12);
    }

    #[test]
    fn every_window_reads_back_its_name_and_has_the_models_attenuation() {
        for (w, att) in [
            (Window::Rectangular, 21.0),
            (Window::Hamming, 53.0),
            (Window::Hann, 44.0),
            (Window::Blackman, 74.0),
            (Window::BlackmanHarris, 92.0),
        ] {
            assert_eq!(Window::parse(w.name()), Some(w));
            assert_eq!(w.max_attenuation(), att, "{w:?}");
        }
    }
}
