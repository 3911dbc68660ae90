//! PAN masking throughput on a 1 MiB JSON body, whole-buffer and streamed in 16 KiB chunks,
//! beside the floor: one `memchr` pass over the same buffer that finds nothing.
//!
//! `cargo bench -p portcullis-benches --bench pan`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use portcullis_assertions::pan::{contains_pan, mask_in_place, MaskStyle, StreamMasker};

const SIZE: usize = 1 << 20;
const CHUNK: usize = 16 * 1024;

/// Realistic JSON records: ids, amounts, dates, but no card numbers.
fn clean_body() -> Vec<u8> {
    let mut body = Vec::with_capacity(SIZE + 512);
    body.push(b'[');
    let mut i: u64 = 0;
    while body.len() < SIZE {
        let rec = format!(
            "{{\"id\":{},\"user\":\"user{}\",\"email\":\"user{}@example.com\",\"amount\":\"{}.{:02}\",\
             \"currency\":\"EUR\",\"created\":\"2026-11-23T10:41:{:02}Z\",\"status\":\"settled\",\
             \"tags\":[\"retail\",\"online\"]}},",
            100_000 + i,
            i,
            i,
            i % 500,
            i % 100,
            i % 60
        );
        body.extend_from_slice(rec.as_bytes());
        i += 1;
    }
    body.truncate(SIZE);
    body
}

/// One card number about every 100 bytes.
fn dense_body() -> Vec<u8> {
    let cards = [
        "4111111111111111",
        "5555 5555 5555 4444",
        "3782-822463-10005",
        "6011111111111117",
    ];
    let mut body = Vec::with_capacity(SIZE + 512);
    body.push(b'[');
    let mut i = 0usize;
    while body.len() < SIZE {
        let rec = format!(
            "{{\"id\":{},\"card\":\"{}\",\"holder\":\"J. Doe\",\"exp\":\"12/29\",\"ok\":true}},",
            100_000 + i,
            cards[i % cards.len()]
        );
        body.extend_from_slice(rec.as_bytes());
        i += 1;
    }
    body.truncate(SIZE);
    body
}

fn bench(c: &mut Criterion) {
    let clean = clean_body();
    let dense = dense_body();
    assert!(!contains_pan(&clean), "the clean body must hold no PAN");
    let mut probe = dense.clone();
    let pans = mask_in_place(&mut probe, MaskStyle::default());
    assert!(pans > SIZE / 120, "dense body: {pans} PANs");

    let mut g = c.benchmark_group("pan");
    g.throughput(Throughput::Bytes(SIZE as u64));

    g.bench_function("floor_memchr_1MiB", |b| {
        b.iter(|| memchr::memchr(b'\0', black_box(&clean)))
    });
    for (name, body) in [("clean", &clean), ("dense", &dense)] {
        g.bench_function(format!("mask_in_place_{name}_1MiB"), |b| {
            b.iter_batched_ref(
                || body.clone(),
                |buf| mask_in_place(black_box(buf), MaskStyle::default()),
                BatchSize::LargeInput,
            )
        });
        let mut out = Vec::with_capacity(SIZE + 64);
        g.bench_function(format!("stream_16KiB_{name}_1MiB"), |b| {
            b.iter(|| {
                out.clear();
                let mut m = StreamMasker::new(MaskStyle::default());
                for chunk in black_box(body).chunks(CHUNK) {
                    m.push(chunk, &mut out);
                }
                m.finish(&mut out);
                black_box(out.len())
            })
        });
    }
    g.bench_function("contains_pan_clean_1MiB", |b| {
        b.iter(|| contains_pan(black_box(&clean)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
