// The README's storefront walk-through, written against a client generated from orderflow's
// own /openapi.json (openapi-typescript → generated/api.d.ts, called through openapi-fetch).
// `tsc` type-checks it first: every path, parameter, body and answer below is typed by the
// document, and the `@ts-expect-error` lines prove the types are real (a document whose bodies
// were untyped `Object`s would make them unused directives, which tsc reports as errors).
//
//   node build/walkthrough.js BASE_URL ADMIN_TOKEN CUSTOMER_TOKEN SKU
// prints one JSON line: what the walk-through saw, for the Rust test to check.
import createClient from "openapi-fetch";
import type { components, paths } from "./generated/api.js";

// Node's own `process`, without pulling in @types/node for one property.
declare const process: { argv: string[] };

type Order = components["schemas"]["Order"];
type Cart = components["schemas"]["CartView"];

const [base, adminToken, customerToken, sku] = process.argv.slice(2);
if (!base || !adminToken || !customerToken || !sku) {
  throw new Error("usage: walkthrough.js BASE_URL ADMIN_TOKEN CUSTOMER_TOKEN SKU");
}

const admin = createClient<paths>({ baseUrl: base, headers: { Authorization: `Bearer ${adminToken}` } });
const shopper = createClient<paths>({ baseUrl: base, headers: { Authorization: `Bearer ${customerToken}` } });

function must<T>(what: string, answer: { data?: T; error?: unknown; response: Response }): T {
  if (answer.data === undefined) {
    throw new Error(`${what}: HTTP ${answer.response.status} ${JSON.stringify(answer.error)}`);
  }
  return answer.data;
}

// The catalog (admin): a product and its stock.
const product = must(
  "PUT product",
  await admin.PUT("/v1/products/{sku}", {
    params: { path: { sku } },
    body: { name: "Coffee mug", category: "kitchen", tags: ["coffee"], price_cents: 1990 },
  }),
);
const stock = must(
  "PUT inventory",
  await admin.PUT("/v1/inventory/{sku}", { params: { path: { sku } }, body: { on_hand: 25 } }),
);
// @ts-expect-error — the stock view has no `quantity` (on_hand, reserved, available, version).
void stock.quantity;

// The shopper: browse, fill a cart.
const page = must("GET products", await shopper.GET("/v1/products", { params: { query: { limit: 5 } } }));
const listed = page.data.map((p) => p.sku);
const cart: Cart = must("POST cart", await shopper.POST("/v1/carts", { body: {} }));
const filled: Cart = must(
  "PUT cart item",
  await shopper.PUT("/v1/carts/{cart_id}/items/{sku}", {
    params: { path: { cart_id: cart.cart_id, sku } },
    body: { quantity: 2, added_to_cart: true },
  }),
);

// A card becomes a token at the (sandbox) gateway; orderflow only ever sees the token.
const card = must(
  "POST card token",
  await shopper.POST("/v1/sandbox/card-tokens", {
    body: { number: "4111111111111111", holder_name: "ANA SILVA", exp_month: 12, exp_year: 2030, cvv: "123" },
  }),
);
// @ts-expect-error — the card number never comes back, only its token and last four.
void card.number;

// Checkout: 202 once the broker confirmed, then follow the order to its decision.
const accepted = must(
  "POST checkout",
  await shopper.POST("/v1/checkout", {
    params: { header: { "Idempotency-Key": `walkthrough-${cart.cart_id}` } },
    body: {
      cart_id: cart.cart_id,
      payment: { method: "card", card_token: card.card_token },
      shipping_address: {
        recipient: "Ana",
        street: "Av. Paulista",
        number: "1000",
        city: "São Paulo",
        state: "SP",
        postal_code: "01310-100",
        country: "BR",
      },
      delivery_method: "express",
    },
  }),
);
let order: Order | undefined;
for (let i = 0; i < 150; i++) {
  const answer = await shopper.GET("/v1/orders/{order_id}", {
    params: { path: { order_id: accepted.order_id } },
  });
  // Accepted and still in the queue (no consumer has taken it yet): 503 with Retry-After.
  if (answer.response.status !== 503) {
    order = must("GET order", answer);
    if (!["received", "reserved"].includes(order.status)) break;
  }
  await new Promise((resolve) => setTimeout(resolve, 100));
}
if (!order) throw new Error("no order");
// @ts-expect-error — an order's status is one of the state machine's, not any string.
const impossible: Order["status"] = "shipped";
void impossible;

// The order's changes as server-sent events: its history, then the stream ends at the decision.
const stream = must(
  "GET order events",
  await shopper.GET("/v1/orders/{order_id}/events", {
    params: { path: { order_id: accepted.order_id } },
    parseAs: "text",
  }),
);
const streamed = stream
  .split("\n")
  .filter((line) => line.startsWith("data:"))
  .map((line) => (JSON.parse(line.slice(5)) as { status: string }).status);

const mine = must("GET my orders", await shopper.GET("/v1/customers/me/orders"));
const notes = must("GET my notifications", await shopper.GET("/v1/customers/me/notifications"));
const after = must("GET inventory", await shopper.GET("/v1/inventory/{sku}", { params: { path: { sku } } }));

console.log(
  JSON.stringify({
    product_stock: product.stock.available,
    listed,
    cart_total_cents: filled.total_cents,
    card_last4: card.last4,
    accepted_status: accepted.status,
    order_status: order.status,
    order_total_cents: order.total_cents,
    payment: order.payment,
    history: order.history.map((h) => h.status),
    streamed,
    delivery_carrier: order.delivery?.carrier ?? null,
    my_order_ids: mine.data.map((o) => o.order_id),
    notification_kinds: notes.data.map((n) => n.kind),
    stock_after: { on_hand: after.on_hand, reserved: after.reserved, available: after.available },
  }),
);
