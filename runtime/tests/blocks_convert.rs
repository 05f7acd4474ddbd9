//! Tests of the conversion blocks: `convert`, the `complex_to_*` family and
//! `to_db`, with exact expected values, under random chunkings.

use std::collections::BTreeMap;

use flowmesh_runtime::harness::{factory, Harness};
use flowmesh_runtime::Graph;
use num_complex::{Complex, Complex32, Complex64};
use serde_json::json;

#[test]
fn i8_and_cs8_to_float_full_scale() {
    let x: Vec<i8> = (i8::MIN..=i8::MAX).collect();
    let y: Vec<f32> = Harness::new(factory("convert", json!({"from": "i8"})))
        .input(&x)
        .run_chunked()
        .items(0);
    assert_eq!(y.len(), 256);
    for (a, b) in x.iter().zip(&y) {
        assert_eq!(*b, *a as f32 / 128.0);
    }
    assert_eq!((y[0], y[255]), (-1.0, 127.0 / 128.0));

    let z: Vec<Complex<i8>> = x
        .iter()
        .map(|v| Complex::new(*v, v.wrapping_neg()))
        .collect();
    let w: Vec<Complex32> = Harness::new(factory("convert", json!({"from": "cs8"})))
        .input(&z)
        .run_chunked()
        .items(0);
    for (a, b) in z.iter().zip(&w) {
        assert_eq!(*b, Complex32::new(a.re as f32 / 128.0, a.im as f32 / 128.0));
    }
}

#[test]
fn i16_and_cs16_vectors_to_float_full_scale() {
    let x: Vec<i16> = (i16::MIN..=i16::MAX).collect();
    let y: Vec<f32> = Harness::new(factory("convert", json!({"from": "i16"})))
        .input(&x)
        .run_chunked()
        .items(0);
    assert_eq!(y.len(), 65536);
    for (a, b) in x.iter().zip(&y) {
        assert_eq!(*b, *a as f32 / 32768.0);
    }

    let z: Vec<Complex<i16>> = (0..4000)
        .map(|i: i32| Complex::new((i * 17 - 32768) as i16, (32767 - i * 13) as i16))
        .collect();
    let w: Vec<Complex32> = Harness::new(factory("convert", json!({"from": "cs16", "vlen": 4})))
        .input(&z)
        .run_chunked()
        .items(0);
    assert_eq!(w.len(), z.len());
    for (a, b) in z.iter().zip(&w) {
        assert_eq!(
            *b,
            Complex32::new(a.re as f32 / 32768.0, a.im as f32 / 32768.0)
        );
    }
}

#[test]
fn i32_rounds_once() {
    let x = vec![i32::MIN, -1, 0, 1, 12345, 1 << 30, i32::MAX, i32::MAX - 63];
    let y: Vec<f32> = Harness::new(factory("convert", json!({"from": "i32"})))
        .input(&x)
        .run_chunked()
        .items(0);
    for (a, b) in x.iter().zip(&y) {
        assert_eq!(*b, (*a as f64 / 2147483648.0) as f32);
    }
    assert_eq!(y[0], -1.0);
    assert_eq!(y[5], 0.5);
}

#[test]
fn u8_is_offset_binary_and_scale_keeps_the_bias() {
    let x: Vec<u8> = (0..=255).collect();
    let y: Vec<f32> = Harness::new(factory("convert", json!({"from": "u8"})))
        .input(&x)
        .run_chunked()
        .items(0);
    for (a, b) in x.iter().zip(&y) {
        assert_eq!(*b, (*a as f32 - 127.5) / 128.0);
    }
    assert_eq!((y[0], y[255]), (-127.5 / 128.0, 127.5 / 128.0));
    // An RTL-SDR's interleaved I/Q as u8 x 2.
    let y: Vec<f32> = Harness::new(factory(
        "convert",
        json!({"from": "u8", "vlen": 2, "scale": 1.0}),
    ))
    .input(&x)
    .run_chunked()
    .items(0);
    for (a, b) in x.iter().zip(&y) {
        assert_eq!(*b, *a as f32 - 127.5);
    }
}

#[test]
fn scale_overrides_the_default() {
    let x: Vec<i16> = vec![-3, 0, 5, 1000];
    let y: Vec<f32> = Harness::new(factory("convert", json!({"from": "i16", "scale": 2.0})))
        .input(&x)
        .run_chunked()
        .items(0);
    assert_eq!(y, vec![-6.0, 0.0, 10.0, 2000.0]);
}

#[test]
fn floats_pass_or_round_to_f32() {
    let x: Vec<f32> = vec![1.5, -0.0, f32::INFINITY, 1e-40, 3.25];
    let y: Vec<f32> = Harness::new(factory("convert", json!({"from": "f32"})))
        .input(&x)
        .run_chunked()
        .items(0);
    assert_eq!(
        y.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        x.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );

    let x: Vec<f64> = vec![0.1, -1e300, 2.0f64.powi(-30), std::f64::consts::PI];
    let y: Vec<f32> = Harness::new(factory("convert", json!({"from": "f64"})))
        .input(&x)
        .run_chunked()
        .items(0);
    assert_eq!(y, x.iter().map(|v| *v as f32).collect::<Vec<_>>());

    let z: Vec<Complex64> = (0..1000)
        .map(|i| Complex64::new(i as f64 / 3.0, -(i as f64) * 0.1))
        .collect();
    let w: Vec<Complex32> = Harness::new(factory("convert", json!({"from": "cf64", "scale": 0.5})))
        .input(&z)
        .run_chunked()
        .items(0);
    for (a, b) in z.iter().zip(&w) {
        assert_eq!(*b, Complex32::new((a.re * 0.5) as f32, (a.im * 0.5) as f32));
    }
}

fn complex_inputs() -> Vec<Complex32> {
    let mut x: Vec<Complex32> = (0..3000)
        .map(|i| {
            let i = i as f32;
            Complex32::new((i * 0.37).sin() * i, (i * 0.11).cos() - 0.5)
        })
        .collect();
    x.extend([
        Complex32::new(3.0, 4.0),
        Complex32::new(0.0, 0.0),
        Complex32::new(-1.0, 0.0),
        Complex32::new(0.0, -2.0),
        Complex32::new(2e38, 2e38),
        Complex32::new(1e-30, 1e-30),
    ]);
    x
}

#[test]
fn complex_parts() {
    let x = complex_inputs();
    let run = |kind: &'static str, vlen: u64| -> Vec<f32> {
        Harness::new(factory(kind, json!({"vlen": vlen})))
            .input(&x)
            .run_chunked()
            .items(0)
    };
    assert_eq!(
        run("complex_to_real", 1),
        x.iter().map(|z| z.re).collect::<Vec<_>>()
    );
    assert_eq!(
        run("complex_to_imag", 3),
        x.iter().map(|z| z.im).collect::<Vec<_>>()
    );
    let mag = run("complex_to_mag", 2);
    assert_eq!(
        mag,
        x.iter()
            .map(|z| ((z.re as f64).powi(2) + (z.im as f64).powi(2)).sqrt() as f32)
            .collect::<Vec<_>>()
    );
    for (z, m) in x.iter().zip(&mag) {
        assert!((*m - z.re.hypot(z.im)).abs() <= m.abs() * 2e-7);
    }
    let n = x.len();
    assert_eq!(mag[n - 6], 5.0);
    assert!(mag[n - 2].is_finite(), "|z| does not overflow");
    assert!(mag[n - 1] > 0.0, "|z| does not underflow");
    let m2 = run("complex_to_mag_squared", 1);
    assert_eq!(
        m2,
        x.iter()
            .map(|z| z.re * z.re + z.im * z.im)
            .collect::<Vec<_>>()
    );
    assert_eq!(m2[n - 6], 25.0);
    let arg = run("complex_to_arg", 1);
    assert_eq!(arg, x.iter().map(|z| z.im.atan2(z.re)).collect::<Vec<_>>());
    assert_eq!(arg[n - 4], std::f32::consts::PI);
    assert_eq!(arg[n - 3], -std::f32::consts::FRAC_PI_2);
}

#[test]
fn to_db_power_and_amplitude_with_floor() {
    let x: Vec<f32> = vec![1.0, 10.0, 100.0, 0.001, 0.0, -1.0, 1e-40, f32::NAN, 2.0];
    let y: Vec<f32> = Harness::new(factory("to_db", json!({"offset": 1.5})))
        .input(&x)
        .run_chunked()
        .items(0);
    assert_eq!(&y[..6], &[1.5, 11.5, 21.5, -28.5, -298.5, -298.5]);
    assert_eq!(y[6], -298.5, "floor at -300 dB before the offset");
    assert!(y[7].is_nan());
    assert_eq!(y[8], (10.0 * 2.0f64.log10() + 1.5) as f32);

    let y: Vec<f32> = Harness::new(factory(
        "to_db",
        json!({"quantity": "amplitude", "vlen": 3}),
    ))
    .input(&x)
    .run_chunked()
    .items(0);
    assert_eq!(&y[..6], &[0.0, 20.0, 40.0, -60.0, -300.0, 0.0]);
    assert_eq!(y[6], -300.0);
    assert!(y[7].is_nan());
    assert_eq!(y[8], (20.0 * 2.0f64.log10()) as f32);
}

#[test]
fn to_db_long_stream_matches_formula() {
    let x: Vec<f32> = (0..20_000)
        .map(|i| (i as f32 * 0.01).exp() * 1e-6)
        .collect();
    let y: Vec<f32> = Harness::new(factory("to_db", json!({})))
        .input(&x)
        .run_chunked()
        .items(0);
    for (a, b) in x.iter().zip(&y) {
        let want = (10.0 * (*a as f64).log10()).max(-300.0) as f32;
        assert_eq!(*b, want);
    }
}

#[test]
fn converters_declare_catalog_ports() {
    let cases = [
        ("convert", json!({"from": "cs16", "vlen": 4})),
        ("convert", json!({"from": "u8"})),
        ("convert", json!({"from": "f64", "vlen": 2})),
        ("complex_to_mag", json!({"vlen": 8})),
        ("complex_to_arg", json!({})),
        ("to_db", json!({"vlen": 16, "quantity": "amplitude"})),
    ];
    for (kind, params) in cases {
        let given: BTreeMap<String, serde_json::Value> = serde_json::from_value(params).unwrap();
        let desc = flowmesh_model::catalog().get(kind).unwrap();
        let (p, problems) = flowmesh_model::params::resolve(desc, &given);
        assert!(problems.is_empty(), "{problems:?}");
        let built = flowmesh_runtime::blocks::build(kind, &p).unwrap();
        let (ins, outs) = desc.resolve_ports(&p);
        assert_eq!(built.inputs, ins, "{kind} inputs");
        assert_eq!(built.outputs, outs, "{kind} outputs");
    }
}

#[test]
fn convert_needs_from() {
    let given: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    let e = Graph::new()
        .add_block("c", "convert", &given)
        .expect_err("from is required")
        .to_string();
    assert!(e.contains("from"), "{e}");
}
