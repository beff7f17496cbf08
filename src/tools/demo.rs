//! Demo data: a deterministic catalog of realistic products with stock, so a newcomer sees the
//! service work (`orderflow demo-data`) and benchmarks have a large catalog to search.

use orderflow::domain::{Product, Sku};

struct CategorySpec {
    name: &'static str,
    code: &'static str,
    nouns: &'static [&'static str],
    adjectives: &'static [&'static str],
    price_cents: (i64, i64),
}

const CATEGORIES: &[CategorySpec] = &[
    CategorySpec {
        name: "electronics",
        code: "ELE",
        nouns: &[
            "Headphones",
            "Speaker",
            "Charger",
            "Keyboard",
            "Mouse",
            "Monitor",
            "Webcam",
            "Earbuds",
        ],
        adjectives: &["Wireless", "Bluetooth", "USB-C", "Gaming", "Compact", "Pro"],
        price_cents: (3_000, 150_000),
    },
    CategorySpec {
        name: "kitchen",
        code: "KIT",
        nouns: &[
            "Mug",
            "Kettle",
            "Frying Pan",
            "Knife Set",
            "Blender",
            "Coffee Maker",
            "Cutting Board",
            "Toaster",
        ],
        adjectives: &[
            "Ceramic",
            "Stainless",
            "Non-stick",
            "Electric",
            "Bamboo",
            "Glass",
        ],
        price_cents: (1_500, 60_000),
    },
    CategorySpec {
        name: "books",
        code: "BOO",
        nouns: &[
            "Novel",
            "Cookbook",
            "Biography",
            "Travel Guide",
            "Atlas",
            "Comic",
        ],
        adjectives: &[
            "Illustrated",
            "Hardcover",
            "Paperback",
            "Classic",
            "Bestselling",
        ],
        price_cents: (2_000, 15_000),
    },
    CategorySpec {
        name: "sports",
        code: "SPO",
        nouns: &[
            "Running Shoes",
            "Yoga Mat",
            "Dumbbells",
            "Football",
            "Water Bottle",
            "Tennis Racket",
        ],
        adjectives: &["Lightweight", "Pro", "Adjustable", "Training", "Outdoor"],
        price_cents: (2_000, 80_000),
    },
    CategorySpec {
        name: "fashion",
        code: "FAS",
        nouns: &["T-Shirt", "Jeans", "Jacket", "Sneakers", "Cap", "Backpack"],
        adjectives: &[
            "Cotton",
            "Denim",
            "Leather",
            "Slim",
            "Vintage",
            "Waterproof",
        ],
        price_cents: (3_000, 40_000),
    },
    CategorySpec {
        name: "toys",
        code: "TOY",
        nouns: &[
            "Puzzle",
            "Building Blocks",
            "Doll",
            "RC Car",
            "Board Game",
            "Plush",
        ],
        adjectives: &["Wooden", "Educational", "Giant", "Classic", "Family"],
        price_cents: (1_500, 30_000),
    },
    CategorySpec {
        name: "garden",
        code: "GAR",
        nouns: &[
            "Hose",
            "Shovel",
            "Planter",
            "Seed Kit",
            "Lawn Mower",
            "Gloves",
        ],
        adjectives: &["Heavy-duty", "Ergonomic", "Organic", "Electric", "Compact"],
        price_cents: (1_000, 200_000),
    },
    CategorySpec {
        name: "beauty",
        code: "BEA",
        nouns: &[
            "Shampoo",
            "Perfume",
            "Face Cream",
            "Lipstick",
            "Hair Dryer",
            "Nail Kit",
        ],
        adjectives: &["Organic", "Vegan", "Travel", "Professional", "Scented"],
        price_cents: (1_500, 50_000),
    },
];

const BRANDS: &[&str] = &[
    "Acme", "Nimbus", "Orbita", "Pampa", "Solaris", "Tupi", "Vértice", "Zenith",
];
const COLORS: &[&str] = &["black", "white", "red", "blue", "green", "grey"];

/// A small deterministic generator (SplitMix64), so the demo catalog is the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items.get(self.below(items.len())).copied().unwrap_or("")
    }
}

/// `n` products spread over the categories, each with its stock (about one in ten sold out).
pub fn catalog(n: usize) -> Vec<(Product, i64)> {
    let mut rng = Rng(0x0D0E_F10A);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let Some(cat) = CATEGORIES.get(i % CATEGORIES.len()) else {
            continue;
        };
        let noun = rng.pick(cat.nouns);
        let adjective = rng.pick(cat.adjectives);
        let brand = rng.pick(BRANDS);
        let color = rng.pick(COLORS);
        let (lo, hi) = cat.price_cents;
        let price = lo + (rng.next() % (hi - lo).max(1) as u64) as i64;
        // Prices end in 90 cents, like a shop's.
        let price = (price / 100) * 100 + 90;
        let Ok(sku) = Sku::parse(&format!("{}-{:06}", cat.code, i)) else {
            continue;
        };
        let mut tags = vec![
            adjective.to_lowercase(),
            noun.to_lowercase(),
            brand.to_lowercase(),
        ];
        tags.dedup();
        let mut attributes = serde_json::Map::new();
        attributes.insert("brand".into(), brand.into());
        attributes.insert("color".into(), color.into());
        let stock = if rng.below(10) == 0 {
            0
        } else {
            1 + rng.below(200) as i64
        };
        out.push((
            Product {
                sku,
                name: format!("{brand} {adjective} {noun} ({color})"),
                category: cat.name.into(),
                tags,
                price_cents: price,
                currency: "BRL".into(),
                attributes,
            },
            stock,
        ));
    }
    out
}

/// `orderflow demo-data [N]`: loads N demo products (default 3,000) with stock. Stock goes
/// through an engine of its own, like every stock change, so it runs while no service is
/// active: it takes the lease as a service would (two engines must not own the same SKUs), and
/// refuses when a service holds it (its lease is live: `--url` loads through that service). Its
/// writes are fenced by the lease; it gives the lease up when done.
pub async fn load(
    config: &orderflow::config::Config,
    n: usize,
) -> Result<usize, orderflow::startup::StartupError> {
    use orderflow::lease::{Leadership, Role};

    orderflow::startup::migrate(config).await?;
    let leadership = Leadership::start(&config.database_url, config.lease.clone());
    // A lease left by a service that died lapses within its time-to-live; a live one is renewed.
    // Waited: the lapse, two tries to take it, and a slow connection (libpq's 2 s time-out).
    let mut role = leadership.watch();
    let lease = &config.lease;
    let wait = lease.ttl
        + lease.retry_every * 2
        + lease.renew_every * 2
        + std::time::Duration::from_secs(3);
    let taken = tokio::time::timeout(wait, role.wait_for(|r| matches!(r, Role::Active { .. })))
        .await
        .is_ok_and(|r| r.is_ok());
    let result = match leadership.fence() {
        Some(fence) if taken => load_as(config, n, &leadership, fence).await,
        _ => Err(orderflow::startup::StartupError::ServiceActive),
    };
    leadership.release().await;
    result
}

async fn load_as(
    config: &orderflow::config::Config,
    n: usize,
    leadership: &orderflow::lease::Leadership,
    fence: orderflow::lease::Fence,
) -> Result<usize, orderflow::startup::StartupError> {
    use std::sync::Arc;

    use orderflow::engine::{Engine, Store};
    use orderflow::persistence::{self, DbError, PgStore};
    use orderflow::startup::StartupError;

    let url = config.database_url.clone();
    let db_err = |source| StartupError::Database {
        url: orderflow::messaging::redact(&config.database_url),
        source,
    };
    let pool = orderflow::blocking::run(move || persistence::connect_pool(&url, 4))
        .await?
        .map_err(db_err)?;
    let products = catalog(n);
    let rows = products.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>();
    persistence::run_blocking(&pool, move |conn| -> Result<(), DbError> {
        for product in &rows {
            persistence::products::upsert(conn, product)?;
        }
        Ok(())
    })
    .await
    .map_err(db_err)?;
    let demote = leadership.clone();
    let guard = orderflow::lease::FenceGuard::new(fence, Arc::new(move || demote.demote()));
    let store: Arc<dyn Store> = Arc::new(PgStore::fenced(pool, guard));
    let engine = Engine::start(store, config.engine.clone())
        .await
        .map_err(StartupError::Engine)?;
    let mut tickets: Vec<(orderflow::domain::Sku, orderflow::engine::DurableTicket)> =
        Vec::with_capacity(products.len());
    let mut failed = Vec::new();
    for (product, stock) in &products {
        let op = orderflow::domain::StockOp::SetOnHand(*stock);
        let mut applied = engine
            .apply(&product.sku, op, Some("demo data".into()))
            .await;
        // Backpressure: a full write-behind queue drains once what is in flight is written.
        if matches!(applied, Err(orderflow::engine::EngineError::Overloaded)) {
            for (sku, ticket) in tickets.drain(..) {
                if let Err(e) = ticket.wait().await {
                    failed.push(format!("{sku}: {e}"));
                }
            }
            applied = engine
                .apply(&product.sku, op, Some("demo data".into()))
                .await;
        }
        match applied {
            Ok(a) => tickets.push((product.sku.clone(), a.durable)),
            Err(e) => failed.push(format!("{}: {e}", product.sku)),
        }
    }
    for (sku, ticket) in tickets {
        if let Err(e) = ticket.wait().await {
            failed.push(format!("{sku}: {e}"));
        }
    }
    engine.shutdown().await;
    if !failed.is_empty() {
        return Err(StartupError::Demo(failed));
    }
    Ok(products.len())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_demo_catalog_is_deterministic_and_plausible() {
        let a = super::catalog(100);
        let b = super::catalog(100);
        assert_eq!(a.len(), 100);
        assert_eq!(a, b);
        assert!(a
            .iter()
            .all(|(p, s)| p.price_cents > 0 && *s >= 0 && !p.tags.is_empty()));
        assert!(a.iter().any(|(_, s)| *s == 0), "some sold out");
        let categories: std::collections::HashSet<_> =
            a.iter().map(|(p, _)| p.category.clone()).collect();
        assert_eq!(categories.len(), 8);
    }
}
