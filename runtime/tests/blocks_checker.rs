//! `stream_checker`, the counter checker other tests rely on: it must pass
//! a counting stream under any chunking, fail on every jump, repeat or
//! reordering that no `gap` tag covers, and accept the ones that are.

use flowmesh_runtime::harness::{factory, Harness};
use flowmesh_runtime::{Pmt, Tag};
use serde_json::json;

fn gap(at: u64, first: u64, count: u64, cause: &str) -> Tag {
    Tag::new(
        at,
        "gap",
        Pmt::map([
            ("first", Pmt::I64(first as i64)),
            ("count", Pmt::I64(count as i64)),
            ("cause", Pmt::String(cause.into())),
        ]),
    )
}

/// Runs the checker over `data` unchunked and in random chunkings; the
/// first error, if any.
fn run(data: &[u64], tags: Vec<Tag>, expect: Option<u64>) -> Result<(), String> {
    let params = match expect {
        Some(e) => json!({"expect": e}),
        None => json!({}),
    };
    for chunking in [None, Some((7, 1)), Some((8, 100)), Some((9, 5000))] {
        let mut h = Harness::new(factory("stream_checker", params.clone()))
            .input_tagged(data, tags.clone());
        if let Some((seed, max)) = chunking {
            h = h.chunks(seed, max);
        }
        h.run().map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[test]
fn a_counting_stream_passes_under_any_chunking() {
    let data: Vec<u64> = (0..20_000).collect();
    run(&data, vec![], Some(20_000)).unwrap();
}

#[test]
fn a_jump_without_a_gap_tag_fails_and_names_the_item() {
    let mut data: Vec<u64> = (0..10_000).collect();
    data.drain(5_000..5_003); // items 5000..5003 lost silently
    let e = run(&data, vec![], None).unwrap_err();
    assert!(
        e.contains("jump at item 5000: got 5003, expected 5000"),
        "{e}"
    );
}

#[test]
fn a_repeat_fails() {
    let mut data: Vec<u64> = (0..10_000).collect();
    data[7_777] = 7_700;
    let e = run(&data, vec![], None).unwrap_err();
    assert!(
        e.contains("repeat or reordering at item 7777: got 7700, expected 7777"),
        "{e}"
    );
}

#[test]
fn a_jump_covered_by_a_gap_tag_passes_and_counts() {
    let mut data: Vec<u64> = (0..10_000).collect();
    data.drain(5_000..5_003);
    // The gap tag sits on the first item after the loss (offset 5000 of the
    // checker's input) and says 3 items are missing.
    run(&data, vec![gap(5_000, 5_000, 3, "overflow")], Some(10_000)).unwrap();
    // A wrong count is caught.
    let e = run(&data, vec![gap(5_000, 5_000, 2, "overflow")], None).unwrap_err();
    assert!(e.contains("jump at item 5000"), "{e}");
}

#[test]
fn a_restart_gap_starts_a_new_stream() {
    let mut data: Vec<u64> = (0..4_000).collect();
    data.extend(0..6_000u64); // the producer restarted from 0
    run(&data, vec![gap(4_000, 4_000, 0, "restart")], Some(6_000)).unwrap();
    // Without the tag the restart is a repeat.
    let e = run(&data, vec![], None).unwrap_err();
    assert!(e.contains("repeat or reordering at item 4000"), "{e}");
}

#[test]
fn the_expected_total_is_enforced() {
    let data: Vec<u64> = (0..1_000).collect();
    let e = run(&data, vec![], Some(1_001)).unwrap_err();
    assert!(e.contains("expected 1001 items"), "{e}");
}

#[test]
fn a_gap_on_the_first_item_counts_as_lost_what_precedes_its_value() {
    // A consumer that resumed too late: its first item, 3000, carries the
    // gap of the 3000 items before it (the producer no longer held them).
    let data: Vec<u64> = (3_000..10_000).collect();
    run(
        &data,
        vec![gap(0, 0, 3_000, "retention_exceeded")],
        Some(10_000),
    )
    .unwrap();
    // A later jump is still checked against the value the stream started at.
    let mut late = data.clone();
    late.drain(100..102);
    let e = run(&late, vec![gap(0, 0, 3_000, "retention_exceeded")], None).unwrap_err();
    assert!(
        e.contains("jump at item 100: got 3102, expected 3100"),
        "{e}"
    );
}
