//! Tests of `file_source` and `file_sink`: raw and SigMF round trips, SigMF
//! metadata, and the errors for missing, short and mismatched files.

use std::collections::BTreeMap;
use std::path::Path;

use flowmesh_model::TypedVec;
use flowmesh_runtime::blocks::BlockSetup;
use flowmesh_runtime::harness::{factory, factory_with, Harness};
use flowmesh_runtime::{run, Graph, Pmt, Tag};
use num_complex::{Complex, Complex32};
use serde_json::{json, Value};

fn cf32_data(n: usize) -> Vec<Complex32> {
    (0..n)
        .map(|i| Complex32::new(i as f32 * 0.5 - 100.0, (i as f32 * 0.01).sin()))
        .collect()
}

fn p(path: &Path) -> String {
    path.to_str().unwrap().to_string()
}

fn params(v: Value) -> BTreeMap<String, Value> {
    serde_json::from_value(v).unwrap()
}

/// The error building `kind` with `v`.
fn build_error(kind: &str, v: Value) -> String {
    match Graph::new().add_block("blk", kind, &params(v)) {
        Ok(_) => panic!("{kind} was built"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn raw_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.cf32");
    let x = cf32_data(10_000);
    Harness::new(factory(
        "file_sink",
        json!({"type": "cf32", "path": p(&path)}),
    ))
    .input(&x)
    .run_chunked();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(
        bytes,
        bytemuck::cast_slice::<_, u8>(&x),
        "file holds the raw items"
    );
    assert!(!dir.path().join("x.cf32.sigmf-meta").exists());

    let y: Vec<Complex32> = Harness::new(factory(
        "file_source",
        json!({"type": "cf32", "path": p(&path)}),
    ))
    .run_chunked()
    .items(0);
    assert_eq!(y, x);
}

#[test]
fn raw_vectors_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.i16");
    let x: Vec<i16> = (0..4 * 3001).map(|i: i32| (i * 7 - 20000) as i16).collect();
    std::fs::write(&path, bytemuck::cast_slice::<_, u8>(&x)).unwrap();
    let y: Vec<i16> = Harness::new(factory(
        "file_source",
        json!({"type": "i16", "vlen": 4, "path": p(&path)}),
    ))
    .run_chunked()
    .items(0);
    assert_eq!(y, x);
    assert!(Harness::new(factory(
        "file_source",
        json!({"type": "i16", "vlen": 4, "path": p(&path)}),
    ))
    .run()
    .unwrap()
    .tags(0)
    .is_empty());
}

#[test]
fn repeat_loops_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.u8");
    std::fs::write(&path, [1u8, 2, 3, 4, 5, 6, 7]).unwrap();
    for buffer in [4096usize, 65536] {
        let mut g = Graph::new();
        g.config.threads = 1;
        g.config.buffer_bytes = buffer;
        g.add_block(
            "src",
            "file_source",
            &params(json!({"type": "u8", "path": p(&path), "repeat": true})),
        )
        .unwrap();
        g.add_block("head", "head", &params(json!({"type": "u8", "n": 100_000})))
            .unwrap();
        g.add_block("sink", "vector_sink", &params(json!({"type": "u8"})))
            .unwrap();
        g.connect("src.out", "head.in").unwrap();
        g.connect("head.out", "sink.in").unwrap();
        let report = run(g).unwrap();
        let Some(Pmt::Vector(TypedVec::U8(y))) = report.get("sink", "data") else {
            panic!("no data")
        };
        assert_eq!(y.len(), 100_000);
        assert!(y.iter().enumerate().all(|(i, v)| *v == (i % 7) as u8 + 1));
    }
}

#[test]
fn empty_file_ends_at_once_even_with_repeat() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.f32");
    std::fs::write(&path, []).unwrap();
    for repeat in [false, true] {
        let out = Harness::new(factory(
            "file_source",
            json!({"type": "f32", "path": p(&path), "repeat": repeat}),
        ))
        .run_chunked();
        assert!(out.items::<f32>(0).is_empty());
    }
}

#[test]
fn missing_file_is_refused_at_build() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.cf32");
    let e = build_error("file_source", json!({"type": "cf32", "path": p(&path)}));
    assert!(e.contains("blk"), "{e}");
    assert!(e.contains(&p(&path)), "names the path: {e}");
    assert!(e.contains("No such file"), "gives the OS error: {e}");
    assert!(e.contains("check `path`"), "says what to do: {e}");
    let e = build_error(
        "file_source",
        json!({"type": "cf32", "path": "no/such/rel.cf32"}),
    );
    assert!(e.contains("working directory"), "{e}");
}

#[test]
fn file_removed_before_start_fails_the_run_naming_the_block() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gone.f32");
    std::fs::write(&path, [0u8; 16]).unwrap();
    let mut g = Graph::new();
    g.add_block(
        "my_source",
        "file_source",
        &params(json!({"type": "f32", "path": p(&path)})),
    )
    .unwrap();
    g.add_block("sink", "null_sink", &params(json!({"type": "f32"})))
        .unwrap();
    g.connect("my_source.out", "sink.in").unwrap();
    std::fs::remove_file(&path).unwrap();
    let e = run(g).err().expect("the run fails").to_string();
    assert!(e.contains("my_source"), "{e}");
    assert!(e.contains(&p(&path)), "{e}");
    assert!(e.contains("No such file"), "{e}");
}

#[test]
fn sink_into_missing_directory_fails_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no_dir").join("out.f32");
    let mut g = Graph::new();
    g.add_block(
        "src",
        "vector_source",
        &params(json!({"type": "f32", "data": [1, 2, 3]})),
    )
    .unwrap();
    g.add_block(
        "recorder",
        "file_sink",
        &params(json!({"type": "f32", "path": p(&path)})),
    )
    .unwrap();
    g.connect("src.out", "recorder.in").unwrap();
    let e = run(g).err().expect("the run fails").to_string();
    assert!(e.contains("recorder"), "{e}");
    assert!(e.contains(&p(&path)), "{e}");
    assert!(e.contains("directory exists"), "{e}");
}

#[test]
fn partial_item_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("short.cf32");
    std::fs::write(&path, [0u8; 8 * 5 + 3]).unwrap();
    let e = build_error("file_source", json!({"type": "cf32", "path": p(&path)}));
    assert!(e.contains("43 bytes"), "{e}");
    assert!(e.contains("check `type` and `vlen`"), "{e}");
    // Fine as u8.
    Harness::new(factory(
        "file_source",
        json!({"type": "u8", "path": p(&path)}),
    ))
    .run_chunked();
}

#[test]
fn sigmf_round_trip_with_metadata_and_annotations() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("rec.sigmf-data");
    let x = cf32_data(5000);
    let tags = vec![
        Tag::new(0, "rx_freq", Pmt::F64(100e6)),
        Tag::new(10, "sob", Pmt::Null),
        Tag::new(2500, "rx_freq", Pmt::F64(101e6)),
        Tag::new(
            4999,
            "burst",
            Pmt::map([("len", Pmt::I64(3)), ("snr", Pmt::F64(12.5))]),
        ),
    ];
    Harness::new(factory(
        "file_sink",
        json!({"type": "cf32", "path": p(&data), "format": "sigmf", "samp_rate": 2.4e6}),
    ))
    .input_tagged(&x, tags)
    .run_chunked();
    assert_eq!(
        std::fs::read(&data).unwrap(),
        bytemuck::cast_slice::<_, u8>(&x)
    );

    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("rec.sigmf-meta")).unwrap())
            .unwrap();
    assert_eq!(meta["global"]["core:datatype"], "cf32_le");
    assert_eq!(meta["global"]["core:sample_rate"], 2.4e6);
    assert_eq!(meta["global"]["core:version"], "1.0.0");
    assert_eq!(
        meta["captures"],
        json!([
            {"core:sample_start": 0, "core:frequency": 100e6},
            {"core:sample_start": 2500, "core:frequency": 101e6},
        ])
    );
    let ann = meta["annotations"].as_array().unwrap();
    let got: Vec<(u64, u64, &str)> = ann
        .iter()
        .map(|a| {
            (
                a["core:sample_start"].as_u64().unwrap(),
                a["core:sample_count"].as_u64().unwrap(),
                a["core:comment"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (0, 1, "rx_freq=100000000.0"),
            (10, 1, "sob=null"),
            (2500, 1, "rx_freq=101000000.0"),
            (4999, 1, r#"burst={"len":3,"snr":12.5}"#),
        ]
    );

    // Read it back, naming either file of the recording.
    for name in ["rec.sigmf-meta", "rec.sigmf-data"] {
        let out = Harness::new(factory(
            "file_source",
            json!({"type": "cf32", "path": p(&dir.path().join(name)), "format": "sigmf"}),
        ))
        .run_chunked();
        assert_eq!(out.items::<Complex32>(0), x);
        let t: Vec<(u64, &str, Pmt)> = out
            .tags(0)
            .iter()
            .map(|t| (t.offset, &*t.key, t.value.clone()))
            .collect();
        assert_eq!(
            t,
            vec![
                (0, "rx_rate", Pmt::F64(2.4e6)),
                (0, "rx_freq", Pmt::F64(100e6)),
                (2500, "rx_freq", Pmt::F64(101e6)),
            ]
        );
    }
}

#[test]
fn sigmf_sink_appends_extensions_and_takes_rate_from_tags() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("capture");
    let x: Vec<Complex<i16>> = (0..3000)
        .map(|i| Complex::new(i as i16, -(i as i16)))
        .collect();
    Harness::new(factory(
        "file_sink",
        json!({"type": "cs16", "vlen": 2, "path": p(&base), "format": "sigmf"}),
    ))
    .input_tagged(&x[..], vec![Tag::new(0, "rx_rate", Pmt::F64(1e6))])
    .run_chunked();
    let data = dir.path().join("capture.sigmf-data");
    let meta_path = dir.path().join("capture.sigmf-meta");
    assert_eq!(
        std::fs::read(&data).unwrap(),
        bytemuck::cast_slice::<_, u8>(&x)
    );
    let meta: Value = serde_json::from_str(&std::fs::read_to_string(&meta_path).unwrap()).unwrap();
    assert_eq!(meta["global"]["core:datatype"], "ci16_le");
    assert_eq!(meta["global"]["core:sample_rate"], 1e6);
    assert_eq!(meta["captures"], json!([{"core:sample_start": 0}]));
    assert_eq!(
        meta["annotations"],
        json!([{"core:sample_start": 0, "core:sample_count": 2, "core:comment": "rx_rate=1000000.0"}])
    );
    // A tag on the end of the stream (a final `gap`: items lost after the
    // last one) is annotated at the sample after the last one.
    let gap = Pmt::map([
        ("first", Pmt::I64(1500)),
        ("count", Pmt::I64(500)),
        ("cause", Pmt::String("overflow".into())),
    ]);
    Harness::new(factory(
        "file_sink",
        json!({"type": "cs16", "vlen": 2, "path": p(&base), "format": "sigmf"}),
    ))
    // 3000 cs16 scalars at vlen 2: 1500 items, so the end is item 1500.
    .input_tagged(&x[..], vec![Tag::new(1500, "gap", gap)])
    .run_chunked();
    let meta: Value = serde_json::from_str(&std::fs::read_to_string(&meta_path).unwrap()).unwrap();
    assert_eq!(
        meta["annotations"],
        json!([{"core:sample_start": 3000, "core:sample_count": 2,
                "core:comment": r#"gap={"cause":"overflow","count":500,"first":1500}"#}])
    );
    // Without any rate the field is left out.
    Harness::new(factory(
        "file_sink",
        json!({"type": "cs16", "vlen": 2, "path": p(&base), "format": "sigmf"}),
    ))
    .input(&x[..])
    .run()
    .unwrap();
    let meta: Value = serde_json::from_str(&std::fs::read_to_string(&meta_path).unwrap()).unwrap();
    assert!(meta["global"].get("core:sample_rate").is_none());
    assert_eq!(meta["annotations"], json!([]));

    // A plain base name reads back too.
    let y: Vec<Complex<i16>> = Harness::new(factory(
        "file_source",
        json!({"type": "cs16", "vlen": 2, "path": p(&base), "format": "sigmf"}),
    ))
    .run_chunked()
    .items(0);
    assert_eq!(y, x);
}

fn write_recording(dir: &Path, datatype: &str, extra: Value, data: &[u8]) -> std::path::PathBuf {
    let mut global = json!({"core:datatype": datatype, "core:version": "1.0.0"});
    for (k, v) in extra.as_object().unwrap() {
        global[k] = v.clone();
    }
    let meta = json!({"global": global, "captures": [{"core:sample_start": 0}], "annotations": []});
    std::fs::write(dir.join("r.sigmf-meta"), meta.to_string()).unwrap();
    std::fs::write(dir.join("r.sigmf-data"), data).unwrap();
    dir.join("r.sigmf-meta")
}

#[test]
fn sigmf_wrong_datatype_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let meta = write_recording(dir.path(), "ri16_le", json!({}), &[0u8; 64]);
    let e = build_error(
        "file_source",
        json!({"type": "cf32", "path": p(&meta), "format": "sigmf"}),
    );
    assert!(e.contains("ri16_le"), "{e}");
    assert!(e.contains("cf32"), "{e}");
    assert!(e.contains("set `type: i16`"), "{e}");
    // The matching type reads it.
    let y: Vec<i16> = Harness::new(factory(
        "file_source",
        json!({"type": "i16", "path": p(&meta), "format": "sigmf"}),
    ))
    .run_chunked()
    .items(0);
    assert_eq!(y, vec![0i16; 32]);

    let meta = write_recording(dir.path(), "cu8", json!({}), &[0u8; 64]);
    let e = build_error(
        "file_source",
        json!({"type": "u8", "path": p(&meta), "format": "sigmf"}),
    );
    assert!(e.contains("cu8") && e.contains("format: raw"), "{e}");

    let meta = write_recording(dir.path(), "ri16_be", json!({}), &[0u8; 64]);
    let e = build_error(
        "file_source",
        json!({"type": "i16", "path": p(&meta), "format": "sigmf"}),
    );
    assert!(e.contains("byte order") && e.contains("ri16_le"), "{e}");
}

#[test]
fn sigmf_rates_must_agree_and_bad_metadata_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let meta = write_recording(
        dir.path(),
        "rf32_le",
        json!({"core:sample_rate": 48000}),
        &[0u8; 40],
    );
    let e = build_error(
        "file_source",
        json!({"type": "f32", "path": p(&meta), "format": "sigmf", "samp_rate": 44100}),
    );
    assert!(e.contains("44100") && e.contains("48000"), "{e}");
    // Agreeing rates are fine, and the tag carries the rate.
    let out = Harness::new(factory(
        "file_source",
        json!({"type": "f32", "path": p(&meta), "format": "sigmf", "samp_rate": 48000}),
    ))
    .run_chunked();
    assert_eq!(out.items::<f32>(0).len(), 10);
    assert_eq!(out.tags(0).len(), 1);
    assert_eq!(out.tags(0)[0].value, Pmt::F64(48000.0));

    std::fs::write(&meta, "{not json").unwrap();
    let e = build_error(
        "file_source",
        json!({"type": "f32", "path": p(&meta), "format": "sigmf"}),
    );
    assert!(e.contains(&p(&meta)) && e.contains("invalid JSON"), "{e}");

    std::fs::remove_file(&meta).unwrap();
    let e = build_error(
        "file_source",
        json!({"type": "f32", "path": p(&meta), "format": "sigmf"}),
    );
    assert!(e.contains(&p(&meta)) && e.contains("No such file"), "{e}");
}

#[test]
fn sigmf_sink_refuses_u64() {
    let dir = tempfile::tempdir().unwrap();
    let e = build_error(
        "file_sink",
        json!({"type": "u64", "path": p(&dir.path().join("x")), "format": "sigmf"}),
    );
    assert!(e.contains("u64") && e.contains("format: raw"), "{e}");
}

#[test]
fn file_blocks_declare_catalog_ports() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.dat");
    std::fs::write(&path, [0u8; 4096]).unwrap();
    let mut cases = vec![];
    for t in flowmesh_runtime::ItemType::ALL {
        for vlen in [1, 4] {
            let v = json!({"type": t.name(), "vlen": vlen, "path": p(&path)});
            cases.push(("file_source", v.clone()));
            cases.push(("file_sink", v.clone()));
            if t != flowmesh_runtime::ItemType::U64 {
                let mut v = v;
                v["format"] = json!("sigmf");
                v["path"] = json!(p(&dir.path().join("s")));
                cases.push(("file_sink", v));
            }
        }
    }
    for (kind, v) in cases {
        let desc = flowmesh_model::catalog().get(kind).unwrap();
        let (pp, problems) = flowmesh_model::params::resolve(desc, &params(v.clone()));
        assert!(problems.is_empty(), "{problems:?}");
        let built = flowmesh_runtime::blocks::build(kind, &pp).unwrap();
        let (ins, outs) = desc.resolve_ports(&pp);
        assert_eq!(built.inputs, ins, "{kind} {v} inputs");
        assert_eq!(built.outputs, outs, "{kind} {v} outputs");
    }
}

#[test]
fn reads_a_fifo_written_in_odd_pieces() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe");
    let ok = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("mkfifo unavailable; skipping");
        return;
    }
    let x = cf32_data(20_000);
    let bytes: Vec<u8> = bytemuck::cast_slice(&x).to_vec();
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
            // Pieces that never line up with the 8-byte items.
            for piece in bytes.chunks(4093) {
                f.write_all(piece).unwrap();
                f.flush().unwrap();
            }
        })
    };
    let out = Harness::new(factory(
        "file_source",
        json!({"type": "cf32", "path": p(&fifo)}),
    ))
    .run()
    .unwrap();
    writer.join().unwrap();
    assert_eq!(out.items::<Complex32>(0), x);
    // A FIFO cannot be rewound, so `repeat` is refused.
    let e = build_error(
        "file_source",
        json!({"type": "cf32", "path": p(&fifo), "repeat": true}),
    );
    assert!(e.contains("regular file") && e.contains("repeat"), "{e}");
}

/// The setup of a resumed append sink that drops its first `n` input items
/// (what the worker gives it).
fn skip(n: u64) -> BlockSetup {
    BlockSetup {
        skip: n,
        ..BlockSetup::default()
    }
}

#[test]
fn append_keeps_whole_items_and_skip_drops_what_comes_again() {
    // A resumed segment: the file holds items 0..1000 and a torn half item;
    // its input starts again at 970 (warm-up), so the sink drops 30 items
    // and the file ends as if the run had never stopped.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.cf32");
    let x = cf32_data(3000);
    let mut held = bytemuck::cast_slice::<_, u8>(&x[..1000]).to_vec();
    held.extend_from_slice(&[1, 2, 3, 4]);
    // Whatever the chunking (the skip may end inside a chunk).
    for (seed, max) in [(1, 1), (2, 7), (3, 29), (4, 4096)] {
        std::fs::write(&path, &held).unwrap();
        Harness::new(factory_with(
            "file_sink",
            json!({"type": "cf32", "path": p(&path), "mode": "append"}),
            skip(30),
        ))
        .input(&x[970..])
        .chunks(seed, max)
        .run()
        .unwrap();
        assert!(
            std::fs::read(&path).unwrap() == bytemuck::cast_slice::<_, u8>(&x),
            "chunks of 1..={max}: whole items kept, the torn one dropped, the overlap skipped"
        );
    }
}

/// `(core:sample_start, core:comment)` of each annotation of a SigMF
/// metadata document.
fn starts_and_comments(meta: &Value) -> Vec<(u64, &str)> {
    meta["annotations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["core:sample_start"].as_u64().unwrap(),
                a["core:comment"].as_str().unwrap(),
            )
        })
        .collect()
}

#[test]
fn sigmf_append_keeps_earlier_metadata_and_places_new_tags_in_the_file() {
    // First run: items 0..1000 with two tags. A resumed run then delivers
    // again from item 970 (skip 30) with its own tags: the metadata must hold
    // the first run's entries before 970, the second run's at their file
    // positions, and nothing twice.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("rec.sigmf-data");
    let meta_path = dir.path().join("rec.sigmf-meta");
    let x = cf32_data(3000);
    let sink = |extra: Value, setup: BlockSetup| {
        let mut v = json!({"type": "cf32", "path": p(&data), "format": "sigmf", "samp_rate": 1e6});
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        factory_with("file_sink", v, setup)
    };
    Harness::new(sink(json!({}), BlockSetup::default()))
        .input_tagged(
            &x[..1000],
            vec![
                Tag::new(5, "sob", Pmt::Null),
                Tag::new(980, "old", Pmt::I64(1)),
            ],
        )
        .run()
        .unwrap();
    Harness::new(sink(json!({"mode": "append"}), skip(30)))
        .input_tagged(
            &x[970..],
            vec![
                Tag::new(10, "old", Pmt::I64(1)), // item 980 again
                Tag::new(100, "rx_freq", Pmt::F64(433e6)),
                Tag::new(2029, "eob", Pmt::Null),
            ],
        )
        .run()
        .unwrap();
    assert!(std::fs::read(&data).unwrap() == bytemuck::cast_slice::<_, u8>(&x));
    let meta: Value = serde_json::from_str(&std::fs::read_to_string(&meta_path).unwrap()).unwrap();
    let got = starts_and_comments(&meta);
    assert_eq!(
        got,
        vec![
            (5, "sob=null"),
            (980, "old=1"),
            (1070, "rx_freq=433000000.0"),
            (2999, "eob=null"),
        ]
    );
    assert_eq!(
        meta["captures"],
        json!([
            {"core:sample_start": 0},
            {"core:sample_start": 1070, "core:frequency": 433e6},
        ])
    );
    assert_eq!(meta["global"]["core:sample_rate"], 1e6);
    assert!(!dir.path().join("rec.sigmf-meta.tmp").exists());

    // Metadata it cannot read is not overwritten: the run fails naming it.
    std::fs::write(&meta_path, "{ not json").unwrap();
    let err = Harness::new(sink(json!({"mode": "append"}), BlockSetup::default()))
        .input(&x[..10])
        .run()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("rec.sigmf-meta") && err.contains("move it away"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&meta_path).unwrap(), "{ not json");
    assert_eq!(std::fs::metadata(&data).unwrap().len(), 3000 * 8);
}

#[test]
fn sigmf_append_recovers_the_tags_a_killed_run_journalled() {
    // What a run killed mid-way leaves: 1000 items in the data file, no
    // metadata, and its tag journal, whose last line is torn. The resumed
    // run delivers again from item 970 (skip 30).
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("rec.sigmf-data");
    let meta_path = dir.path().join("rec.sigmf-meta");
    let journal = dir.path().join("rec.sigmf-meta.journal");
    let x = cf32_data(2000);
    std::fs::write(&data, bytemuck::cast_slice::<_, u8>(&x[..1000])).unwrap();
    std::fs::write(
        &journal,
        concat!(
            r#"{"start":0,"comment":"rx_rate=2000000.0","rate":2000000.0}"#,
            "\n",
            r#"{"start":7,"comment":"rx_freq=915000000.0","frequency":915000000.0}"#,
            "\n",
            r#"{"start":975,"comment":"late=1"}"#,
            "\n",
            r#"{"start":99"#,
        ),
    )
    .unwrap();
    Harness::new(factory_with(
        "file_sink",
        json!({"type": "cf32", "path": p(&data), "format": "sigmf", "mode": "append"}),
        skip(30),
    ))
    .input_tagged(&x[970..], vec![Tag::new(5, "late", Pmt::I64(1))])
    .run()
    .unwrap();
    assert!(std::fs::read(&data).unwrap() == bytemuck::cast_slice::<_, u8>(&x));
    assert!(
        !journal.exists(),
        "the journal is folded into the metadata at stop"
    );
    let meta: Value = serde_json::from_str(&std::fs::read_to_string(&meta_path).unwrap()).unwrap();
    assert_eq!(meta["global"]["core:sample_rate"], 2e6);
    assert_eq!(
        meta["captures"],
        json!([
            {"core:sample_start": 0},
            {"core:sample_start": 7, "core:frequency": 915e6},
        ])
    );
    let got = starts_and_comments(&meta);
    assert_eq!(
        got,
        vec![
            (0, "rx_rate=2000000.0"),
            (7, "rx_freq=915000000.0"),
            (975, "late=1"),
        ],
        "the journal's tags before the overlap, then the overlap's own, once"
    );
}

#[test]
fn sigmf_append_does_not_repeat_what_both_the_metadata_and_a_stale_journal_list() {
    // A run stopped between writing its metadata and removing its journal:
    // both list the tag; the next append lists it once.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("rec.sigmf-data");
    let x = cf32_data(100);
    let sink = |mode: &str| {
        factory(
            "file_sink",
            json!({"type": "cf32", "path": p(&data), "format": "sigmf", "mode": mode}),
        )
    };
    Harness::new(sink("truncate"))
        .input_tagged(&x, vec![Tag::new(3, "sob", Pmt::Null)])
        .run()
        .unwrap();
    std::fs::write(
        dir.path().join("rec.sigmf-meta.journal"),
        "{\"start\":3,\"comment\":\"sob=null\"}\n",
    )
    .unwrap();
    Harness::new(sink("append")).input(&x[..0]).run().unwrap();
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("rec.sigmf-meta")).unwrap())
            .unwrap();
    assert_eq!(starts_and_comments(&meta), vec![(3, "sob=null")]);
    assert_eq!(std::fs::metadata(&data).unwrap().len(), 100 * 8);
}
