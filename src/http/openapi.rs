//! The OpenAPI 3.1 document of the HTTP API, generated from the handlers' own annotations and
//! served at `GET /openapi.json`. A test checks that every route the app registers
//! ([`super::ROUTES`]) is in it, and nothing else.

use actix_web::HttpResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use super::{carts, health, inventory, monitor, orders, products, sandbox, stream};

/// Every error answer: `{"error": {"code", "message", "details"}}`.
#[derive(ToSchema)]
#[allow(dead_code)]
#[schema(example = json!({"error": {"code": "not_found", "message": "order not found", "details": {}}}))]
pub struct ErrorBody {
    error: ErrorDetail,
}

/// The error itself.
#[derive(ToSchema)]
#[allow(dead_code)]
#[schema(example = json!({"code": "not_found", "message": "order not found", "details": {}}))]
pub struct ErrorDetail {
    /// What went wrong, for programs: one of the listed codes (`ErrorCodes` sets the list).
    code: String,
    /// For humans.
    message: String,
    /// `fields` for `validation_failed`, `items` (with suggestions) for `out_of_stock`,
    /// `request_id` for a 5xx, `retry_after_s` for a 503; `{}` otherwise.
    #[schema(value_type = Object)]
    details: (),
}

/// The document's answers say what the routes do beyond their bodies: the list of error codes;
/// `Retry-After` on every 429 and 503, `WWW-Authenticate` on every 401, `Allow` on every 405;
/// and every route's possible 500 (`internal`, its `details.request_id` finds the cause in the
/// log).
struct ErrorAnswers;

impl Modify for ErrorAnswers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        use utoipa::openapi::{Header, RefOr, ResponseBuilder, Schema};
        if let Some(components) = openapi.components.as_mut() {
            if let Some(RefOr::T(Schema::Object(detail))) =
                components.schemas.get_mut("ErrorDetail")
            {
                let codes = ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(crate::http::error::CODES))
                    .description(Some("What went wrong, for programs."));
                detail.properties.insert("code".into(), codes.into());
            }
        }
        let header = |schema: ObjectBuilder, description: &str| {
            let mut header = Header::new(schema);
            header.description = Some(description.to_owned());
            header
        };
        let text =
            |description: &str| header(ObjectBuilder::new().schema_type(Type::String), description);
        let seconds = header(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(1)),
            "Seconds to wait before trying again.",
        );
        let internal = ResponseBuilder::new()
            .description("Internal error (`internal`): nothing of the cause is shown; `details.request_id` (also `X-Request-Id`) finds it in the log")
            .content(
                "application/json",
                utoipa::openapi::ContentBuilder::new()
                    .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build();
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                let answers = &mut operation.responses.responses;
                for (status, answer) in answers.iter_mut() {
                    let RefOr::T(answer) = answer else { continue };
                    let (name, header) = match status.as_str() {
                        "429" | "503" => ("Retry-After", seconds.clone()),
                        "401" => (
                            "WWW-Authenticate",
                            text("`Bearer`, with the reason when a token was refused."),
                        ),
                        "405" => (
                            "Allow",
                            text("The methods this resource answers (RFC 9110)."),
                        ),
                        _ => continue,
                    };
                    answer.headers.insert(name.into(), header);
                }
                answers
                    .entry("500".into())
                    .or_insert_with(|| RefOr::T(internal.clone()));
            }
        }
    }
}

/// The admin bearer token (`Authorization: Bearer $ADMIN_TOKEN`).
struct AdminToken;

impl Modify for AdminToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        // A customer's JWT (`sub` = the customer id).
        components.add_security_scheme(
            "customer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "orderflow",
        description = "Order-flow and inventory engine: catalog, real-time stock, carts, checkout, orders. Every non-2xx answer has the ErrorBody shape."
    ),
    paths(
        health::live,
        health::ready,
        document,
        monitor::metrics,
        monitor::queues,
        monitor::stream,
        monitor::dead_letters,
        monitor::dashboard,
        monitor::dashboard_file,
        products::list,
        products::similar,
        products::get,
        products::put,
        carts::create,
        carts::get,
        carts::put_item,
        orders::checkout,
        sandbox::card_tokens,
        orders::get,
        orders::events,
        orders::cancel,
        orders::of_customer,
        orders::my_orders,
        orders::notifications,
        orders::my_notifications,
        stream::stock,
        inventory::get,
        inventory::put,
        inventory::adjust,
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&AdminToken, &ErrorAnswers, &Links),
)]
pub struct ApiDoc;

/// (method, path of the maker, the id's name, the routes that take it as (method, path)).
type Follow = (
    &'static str,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

/// Links from what makes a resource to what reads and changes it (OpenAPI links): a client — and
/// schemathesis's stateful phase — follows a new cart, order or product with its id.
struct Links;

impl Links {
    const FOLLOW: [Follow; 3] = [
        (
            "post",
            "/v1/carts",
            "cart_id",
            &[
                ("get", "/v1/carts/{cart_id}"),
                ("put", "/v1/carts/{cart_id}/items/{sku}"),
            ],
        ),
        (
            "post",
            "/v1/checkout",
            "order_id",
            &[
                ("get", "/v1/orders/{order_id}"),
                ("get", "/v1/orders/{order_id}/events"),
                ("post", "/v1/orders/{order_id}/cancel"),
            ],
        ),
        (
            "put",
            "/v1/products/{sku}",
            "sku",
            &[
                ("get", "/v1/products/{sku}"),
                ("get", "/v1/products/{sku}/similar"),
                ("get", "/v1/inventory/{sku}"),
                ("put", "/v1/inventory/{sku}"),
                ("post", "/v1/inventory/{sku}/adjustments"),
                ("put", "/v1/carts/{cart_id}/items/{sku}"),
            ],
        ),
    ];
}

/// The operation at `method` `path`.
fn operation<'a>(
    openapi: &'a mut utoipa::openapi::OpenApi,
    method: &str,
    path: &str,
) -> Option<&'a mut utoipa::openapi::path::Operation> {
    let item = openapi.paths.paths.get_mut(path)?;
    match method {
        "get" => item.get.as_mut(),
        "put" => item.put.as_mut(),
        "post" => item.post.as_mut(),
        _ => None,
    }
}

impl Modify for Links {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::link::LinkBuilder;
        use utoipa::openapi::RefOr;
        for (method, path, id, targets) in Self::FOLLOW {
            let mut links = Vec::new();
            for (target_method, target_path) in targets {
                let Some(target) = operation(openapi, target_method, target_path) else {
                    continue;
                };
                let Some(operation_id) = target.operation_id.clone() else {
                    continue;
                };
                let link = LinkBuilder::new()
                    .operation_id(operation_id.as_str())
                    .parameter(id, format!("$response.body#/{id}"))
                    .description(format!("{target_method} {target_path} with this {id}"))
                    .build();
                links.push((operation_id, link));
            }
            let Some(maker) = operation(openapi, method, path) else {
                continue;
            };
            for (status, answer) in maker.responses.responses.iter_mut() {
                let RefOr::T(answer) = answer else { continue };
                if !status.starts_with('2') {
                    continue;
                }
                for (name, link) in &links {
                    answer.links.insert(name.clone(), RefOr::T(link.clone()));
                }
            }
        }
    }
}

/// `GET /openapi.json`.
#[utoipa::path(get, path = "/openapi.json", tag = "health", responses((status = 200, description = "This document", body = Object)))]
pub async fn document() -> HttpResponse {
    HttpResponse::Ok().json(json())
}

/// The document as served. utoipa 5.5 writes a link's fields in snake case (`operation_id`);
/// OpenAPI's are camel case (`operationId`), and clients read only those.
pub fn json() -> serde_json::Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    let answers = doc
        .get_mut("paths")
        .and_then(|p| p.as_object_mut())
        .into_iter()
        .flat_map(|paths| paths.values_mut())
        .filter_map(|item| item.as_object_mut())
        .flat_map(|item| item.values_mut())
        .filter_map(|operation| operation.get_mut("responses")?.as_object_mut())
        .flat_map(|answers| answers.values_mut());
    for answer in answers {
        let Some(links) = answer.get_mut("links").and_then(|l| l.as_object_mut()) else {
            continue;
        };
        for link in links.values_mut().filter_map(|l| l.as_object_mut()) {
            for (snake, camel) in [
                ("operation_id", "operationId"),
                ("operation_ref", "operationRef"),
                ("request_body", "requestBody"),
            ] {
                if let Some(value) = link.remove(snake) {
                    link.insert(camel.to_owned(), value);
                }
            }
        }
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every answer says what comes with it: `Retry-After` on each 429/503, `WWW-Authenticate`
    /// on each 401, `Allow` on each 405, a 500 on every route; the codes are the list.
    #[test]
    fn the_document_declares_each_answers_headers_and_every_error_code() {
        let doc = json();
        let mut seen = std::collections::BTreeMap::<&str, usize>::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let answers = operation["responses"].as_object().unwrap();
                assert!(answers.contains_key("500"), "{method} {path}: no 500");
                for (status, answer) in answers {
                    let needed = match status.as_str() {
                        "429" | "503" => "Retry-After",
                        "401" => "WWW-Authenticate",
                        "405" => "Allow",
                        _ => continue,
                    };
                    assert!(
                        answer["headers"][needed].is_object(),
                        "{method} {path} {status}: no {needed}: {answer}"
                    );
                    *seen.entry(needed).or_default() += 1;
                }
            }
        }
        assert!(seen.get("Retry-After") > Some(&5), "{seen:?}");
        assert!(seen.get("WWW-Authenticate") > Some(&5), "{seen:?}");
        // A new order links to reading, following and cancelling it by its id.
        let made = &doc["paths"]["/v1/checkout"]["post"]["responses"]["202"]["links"];
        let follows: Vec<&str> = made
            .as_object()
            .map(|l| {
                l.values()
                    .filter_map(|l| l["operationId"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(follows.len(), 3, "{made}");
        assert!(follows.contains(&"get_order"), "{made}");
        for link in made.as_object().unwrap().values() {
            assert_eq!(link["parameters"]["order_id"], "$response.body#/order_id");
        }
        let codes = &doc["components"]["schemas"]["ErrorDetail"]["properties"]["code"]["enum"];
        assert_eq!(*codes, serde_json::json!(crate::http::error::CODES));
    }
}
