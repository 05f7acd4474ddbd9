//! Single-block tests of the core blocks against reference math.

use flowmesh_runtime::harness::{factory, Harness};
use flowmesh_runtime::Pmt;
use flowmesh_runtime::Tag;
use num_complex::Complex32;
use serde_json::json;

#[test]
fn multiply_const_f32_matches_reference_in_any_chunking() {
    let x: Vec<f32> = (0..10_000).map(|i| i as f32 * 0.25 - 7.0).collect();
    let out = Harness::new(factory(
        "multiply_const",
        json!({"type": "f32", "constant": 0.999}),
    ))
    .input(&x)
    .run_chunked();
    let y: Vec<f32> = out.items(0);
    assert_eq!(y.len(), x.len());
    for (a, b) in x.iter().zip(&y) {
        assert_eq!(*b, a * 0.999f32);
    }
}

#[test]
fn multiply_const_cf32_complex_constant() {
    let x: Vec<Complex32> = (0..5000)
        .map(|i| Complex32::new(i as f32, -(i as f32) / 2.0))
        .collect();
    let k = Complex32::new(0.6, 0.8);
    let out = Harness::new(factory(
        "multiply_const",
        json!({"type": "cf32", "constant": "0.6+0.8j"}),
    ))
    .input(&x)
    .run_chunked();
    let y: Vec<Complex32> = out.items(0);
    for (a, b) in x.iter().zip(&y) {
        assert_eq!(*b, a * k);
    }
}

#[test]
fn add_three_streams_and_tags_all_to_all() {
    let a: Vec<i32> = (0..3000).collect();
    let b: Vec<i32> = (0..3000).map(|i| 10 * i).collect();
    let c: Vec<i32> = (0..3000).map(|i| -i).collect();
    let out = Harness::new(factory("add", json!({"type": "i32", "num_inputs": 3})))
        .input_tagged(&a, vec![Tag::new(5, "sob", Pmt::Null)])
        .input(&b)
        .input_tagged(&c, vec![Tag::new(2999, "eob", Pmt::Null)])
        .run_chunked();
    let y: Vec<i32> = out.items(0);
    assert_eq!(y, (0..3000).map(|i| 10 * i).collect::<Vec<_>>());
    let offs: Vec<_> = out
        .tags(0)
        .iter()
        .map(|t| (t.offset, t.key.to_string()))
        .collect();
    assert_eq!(offs, vec![(5, "sob".into()), (2999, "eob".into())]);
}

#[test]
fn head_passes_exactly_n() {
    let x: Vec<u64> = (0..1000).collect();
    let out = Harness::new(factory("head", json!({"type": "u64", "n": 321})))
        .input(&x)
        .run_chunked();
    assert_eq!(out.items::<u64>(0), (0..321).collect::<Vec<_>>());
}

#[test]
fn tagger_tags_every_period() {
    let x = vec![0u8; 5000];
    let out = Harness::new(factory(
        "tagger",
        json!({"type": "u8", "period": 1024, "key": "t"}),
    ))
    .input(&x)
    .run_chunked();
    let offs: Vec<u64> = out.tags(0).iter().map(|t| t.offset).collect();
    assert_eq!(offs, vec![0, 1024, 2048, 3072, 4096]);
    assert!(out
        .tags(0)
        .iter()
        .all(|t| t.value == Pmt::I64(t.offset as i64)));
}

#[test]
fn vector_source_repeats_vectors() {
    let out = Harness::new(factory(
        "vector_source",
        json!({"type": "cs16", "vlen": 2, "data": ["1+2j", "3-4j", 5, "-6j"]}),
    ))
    .run_chunked();
    let y: Vec<num_complex::Complex<i16>> = out.items(0);
    assert_eq!(
        y,
        vec![
            num_complex::Complex::new(1, 2),
            num_complex::Complex::new(3, -4),
            num_complex::Complex::new(5, 0),
            num_complex::Complex::new(0, -6)
        ]
    );
}
