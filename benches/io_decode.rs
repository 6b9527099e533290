//! Decoding full-resolution Kermany JPEGs: at full size, and at the reduced DCT scale used for
//! the model's input, alone and followed by the resize to 224 x 224.
//!
//! Run with `cargo bench --bench io_decode`. Reads `../shared/data/kermany-fullres`; without it
//! the benchmark says so and measures nothing.

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use cxr_triage::io::{
    GrayImage, Samples, load_study_bytes, load_study_bytes_for_model, sha256_hex,
};
use fast_image_resize::images::{TypedImage, TypedImageRef};
use fast_image_resize::pixels::U16;
use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};

/// The model's input side, in pixels.
const INPUT_SIZE_PX: u32 = 224;

/// The largest images of the set: the README's 2111 x 1509, and the largest area (2031 x 1837).
const FILES: [&str; 2] = ["NORMAL/IM-0003-0001.jpeg", "NORMAL/IM-0005-0001.jpeg"];

/// Resizes to the model's input as `model::preprocess` does (antialiased bilinear on u16).
fn resize_to_input(image: &GrayImage) -> Vec<u16> {
    let Samples::U16(pixels) = &image.samples else {
        panic!("JPEG samples are integers");
    };
    let src: Vec<U16> = pixels.iter().map(|&p| U16::new(p)).collect();
    let src = TypedImageRef::new(image.width, image.height, &src).expect("a consistent image");
    let mut dst = TypedImage::<U16>::new(INPUT_SIZE_PX, INPUT_SIZE_PX);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
    Resizer::new()
        .resize_typed(&src, &mut dst, &options)
        .expect("resizing");
    dst.pixels().iter().map(|p| p.0).collect()
}

fn decode(c: &mut Criterion) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/kermany-fullres");
    if !dir.is_dir() {
        eprintln!(
            "io_decode: nothing measured, the shared data is missing ({})",
            dir.display()
        );
        return;
    }
    let mut group = c.benchmark_group("kermany_jpeg");
    group
        .sample_size(40)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for name in FILES {
        let bytes = std::fs::read(dir.join(name)).expect("reading a shared JPEG");
        let short = name.rsplit('/').next().unwrap_or(name);
        group.bench_function(format!("full/{short}"), |b| {
            b.iter(|| load_study_bytes(black_box(&bytes)).expect("decodes"));
        });
        group.bench_function(format!("for_model_224/{short}"), |b| {
            b.iter(|| {
                load_study_bytes_for_model(black_box(&bytes), INPUT_SIZE_PX).expect("decodes")
            });
        });
        group.bench_function(format!("for_model_224_and_resize/{short}"), |b| {
            b.iter(|| {
                let study =
                    load_study_bytes_for_model(black_box(&bytes), INPUT_SIZE_PX).expect("decodes");
                resize_to_input(&study.image)
            });
        });
        group.bench_function(format!("full_and_resize/{short}"), |b| {
            b.iter(|| {
                let study = load_study_bytes(black_box(&bytes)).expect("decodes");
                resize_to_input(&study.image)
            });
        });
        group.bench_function(format!("sha256_only/{short}"), |b| {
            b.iter(|| sha256_hex(black_box(&bytes)));
        });
    }
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
