//! Similar-product suggestions over a 100,000-product catalog while stock keeps changing.
//!
//! `suggestions/hot_sku`: every request asks for the same product (the losers of a flash sale).
//! `suggestions/uniform`: requests spread over the whole catalog.
//! A background thread changes the availability of random SKUs the whole time, as the SKU
//! actors would. Compare with `reservations/memory/*` (the engine's own rate).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

#[path = "../src/tools/demo.rs"]
#[allow(dead_code)]
mod demo;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use orderflow::catalog::Catalog;
use orderflow::domain::Sku;
use orderflow::engine::AvailabilityBoard;

const PRODUCTS: usize = 100_000;

fn suggestions(c: &mut Criterion) {
    let board = AvailabilityBoard::default();
    let catalog = Catalog::new(board.clone());
    let products = demo::catalog(PRODUCTS);
    let skus: Arc<Vec<Sku>> = Arc::new(products.iter().map(|(p, _)| p.sku.clone()).collect());
    for (product, stock) in products {
        board.cell(&product.sku).store(stock, Ordering::Relaxed);
        catalog.upsert(product);
    }

    // Stock changes all the time: about a million availability updates a second.
    let stop = Arc::new(AtomicBool::new(false));
    let changes = Arc::new(AtomicU64::new(0));
    let churn = {
        let (board, skus, stop, changes) = (
            board.clone(),
            Arc::clone(&skus),
            Arc::clone(&stop),
            Arc::clone(&changes),
        );
        std::thread::spawn(move || {
            let mut x: u64 = 12345;
            while !stop.load(Ordering::Relaxed) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let sku = &skus[(x as usize) % skus.len()];
                board.cell(sku).store((x % 7) as i64, Ordering::Relaxed);
                changes.fetch_add(1, Ordering::Relaxed);
                if x % 64 == 0 {
                    std::thread::sleep(Duration::from_micros(50));
                }
            }
        })
    };

    let mut group = c.benchmark_group("suggestions");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(1));
    let hot = skus[4242].clone();
    group.bench_function("hot_sku", |b| {
        b.iter(|| catalog.similar(&hot, 5).expect("known sku"))
    });
    let mut i = 0usize;
    group.bench_function("uniform", |b| {
        b.iter(|| {
            i = (i + 7919) % skus.len();
            catalog.similar(&skus[i], 5).expect("known sku")
        })
    });
    group.finish();
    stop.store(true, Ordering::Relaxed);
    let _ = churn.join();
    eprintln!(
        "stock changes applied during the run: {}",
        changes.load(Ordering::Relaxed)
    );
}

criterion_group!(benches, suggestions);
criterion_main!(benches);
