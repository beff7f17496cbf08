//! Diesel table definitions, matching `migrations/`.

diesel::table! {
    products (sku) {
        sku -> Text,
        name -> Text,
        category -> Text,
        tags -> Array<Text>,
        price_cents -> Int8,
        currency -> Text,
        attributes -> Jsonb,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    stock (sku) {
        sku -> Text,
        on_hand -> Int8,
        reserved -> Int8,
        version -> Int8,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    stock_events (sku, version) {
        sku -> Text,
        version -> Int8,
        kind -> Text,
        quantity -> Int8,
        on_hand -> Int8,
        reserved -> Int8,
        reason -> Nullable<Text>,
        recorded_at -> Timestamptz,
        #[sql_name = "ref"]
        reference -> Nullable<Text>,
        change_id -> Nullable<Uuid>,
    }
}

diesel::joinable!(stock -> products (sku));
diesel::allow_tables_to_appear_in_same_query!(
    products,
    stock,
    stock_events,
    carts,
    cart_items,
    orders,
    checkout_keys,
    notifications
);

diesel::table! {
    server_secrets (name) {
        name -> Text,
        secret -> Bytea,
    }
}

diesel::table! {
    carts (cart_id) {
        cart_id -> Uuid,
        customer_id -> Text,
        status -> Text,
        order_id -> Nullable<Uuid>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    cart_items (cart_id, sku) {
        cart_id -> Uuid,
        sku -> Text,
        quantity -> Int8,
        added_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::joinable!(cart_items -> carts (cart_id));

diesel::table! {
    orders (order_id) {
        order_id -> Uuid,
        idempotency_key -> Text,
        request_fingerprint -> Text,
        customer_id -> Text,
        cart_id -> Nullable<Uuid>,
        origin -> Text,
        status -> Text,
        items -> Jsonb,
        total_cents -> Int8,
        currency -> Text,
        delivery_method -> Text,
        shipping_address -> Jsonb,
        payment -> Jsonb,
        delivery -> Nullable<Jsonb>,
        rejection -> Nullable<Jsonb>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        settled -> Bool,
        history -> Jsonb,
    }
}

diesel::table! {
    checkout_keys (order_id) {
        order_id -> Uuid,
        idempotency_key -> Text,
        customer_id -> Text,
        fingerprint -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    notifications (id) {
        id -> Uuid,
        customer_id -> Text,
        kind -> Text,
        order_id -> Uuid,
        message -> Text,
        suggestions -> Jsonb,
        created_at -> Timestamptz,
    }
}
