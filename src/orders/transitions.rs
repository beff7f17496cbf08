//! Status changes: each guarded by the status it leaves (so an order is never decided twice),
//! written with its history row and the customer's notification in one write, then announced —
//! on the in-process stream and as events on `order.events`.

use chrono::{DateTime, Utc};
use futures_util::future::join_all;
use serde_json::json;
use tracing::Instrument;
use uuid::Uuid;

use super::writer::{OrderWrite, OrderWritten};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

use super::store::OrderStore;
use super::{Deadline, EventScope, OrderEvent, StepError};
use crate::batch::SubmitError;
use crate::domain::clock::Clock;
use crate::domain::delivery::DeliverySlot;
use crate::domain::order::{Order, OrderStatus, Rejection};
use crate::messaging::publisher::Publisher;
use crate::messaging::topology::EXCHANGE_ORDER_EVENTS;
use crate::monitor::Monitor;
use crate::persistence::orders::{NotificationRow, TransitionRow};
use crate::persistence::DbError;

/// A status change to make.
#[derive(Debug, Clone)]
pub(super) struct Move {
    pub to: OrderStatus,
    /// A status passed through on the way, recorded in the history by the same write (e.g.
    /// `reserved` on the way from `received` to `scheduled`).
    pub via: Option<(OrderStatus, DateTime<Utc>)>,
    pub delivery: Option<DeliverySlot>,
    pub rejection: Option<Rejection>,
    /// `false` when the order ends without its stock and may still hold reservations: whoever
    /// finds it so releases them and settles it.
    pub settled: bool,
}

impl Move {
    pub fn to(to: OrderStatus) -> Move {
        Move {
            to,
            via: None,
            delivery: None,
            rejection: None,
            settled: true,
        }
    }
}

fn notification_message(kind: &str, order_id: Uuid) -> String {
    match kind {
        "order_scheduled" => format!("Your order {order_id} is confirmed and scheduled for delivery."),
        "payment_declined" => format!("The payment for order {order_id} was declined; nothing was charged and the items were released."),
        "order_cancelled" => format!("Your order {order_id} was cancelled."),
        "order_expired" => format!("Sorry: order {order_id} could not be completed and was closed; nothing was charged and the items were released."),
        "stock_conflict" => format!("Sorry: other customers took the last units of some items in order {order_id} just before it was processed. Here are similar products in stock."),
        _ => format!("Some items in order {order_id} are out of stock. Here are similar products in stock."),
    }
}

/// The order records: every write to them (through the order writer), reading them back, and
/// announcing what changed — on the in-process stream and as events on `order.events`.
#[derive(Clone)]
pub(super) struct Records {
    store: Arc<dyn OrderStore>,
    events: broadcast::Sender<OrderEvent>,
    publisher: Arc<dyn Publisher>,
    monitor: Arc<Monitor>,
    scope: EventScope,
    clock: Arc<dyn Clock>,
    #[cfg(feature = "fault-injection")]
    faults: Arc<super::faults::Faults>,
}

impl Records {
    pub fn new(
        store: Arc<dyn OrderStore>,
        publisher: Arc<dyn Publisher>,
        monitor: Arc<Monitor>,
        scope: EventScope,
        clock: Arc<dyn Clock>,
        #[cfg(feature = "fault-injection")] faults: Arc<super::faults::Faults>,
    ) -> Records {
        let (events, _) = broadcast::channel(4096);
        Records {
            store,
            events,
            publisher,
            monitor,
            scope,
            clock,
            #[cfg(feature = "fault-injection")]
            faults,
        }
    }

    /// Status changes as they happen.
    pub fn subscribe(&self) -> broadcast::Receiver<OrderEvent> {
        self.events.subscribe()
    }

    /// Where the records are kept (its counters; stopping it at shutdown).
    pub fn store(&self) -> &dyn OrderStore {
        self.store.as_ref()
    }

    /// Whether the order writer cannot write right now.
    pub fn writer_failing(&self) -> bool {
        self.store.stats().is_failing()
    }

    /// Queues a write and waits (within `deadline`) until it is committed; waits out a
    /// saturated writer.
    pub async fn write(
        &self,
        item: OrderWrite,
        deadline: &Deadline,
    ) -> Result<OrderWritten, StepError> {
        let ticket = self.submit(item, deadline).await?;
        Ok(deadline.bound(ticket.wait()).await??)
    }

    /// Queues a write (waiting out a saturated writer, within `deadline`): its ticket.
    pub async fn submit(
        &self,
        item: OrderWrite,
        deadline: &Deadline,
    ) -> Result<crate::batch::Ticket<OrderWritten>, StepError> {
        loop {
            match self.store.submit(item.clone()) {
                Ok(ticket) => return Ok(ticket),
                Err(SubmitError::Full) => {
                    if deadline.passed() {
                        return Err(StepError::Transient("the order writer is saturated".into()));
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(SubmitError::Stopped) => {
                    return Err(StepError::Transient("the order writer stopped".into()))
                }
            }
        }
    }

    /// The order with its history, as stored.
    pub async fn get(&self, order_id: Uuid) -> Result<Option<Order>, DbError> {
        self.store.get(order_id).await
    }

    /// Moves the order (guarded by its current status), records history and notification,
    /// publishes the events. If the order had moved meanwhile, `order` is reloaded instead.
    pub(super) async fn transition(
        &self,
        order: &mut Order,
        step: Move,
        deadline: &Deadline,
    ) -> Result<(), StepError> {
        let allowed = match step.via {
            Some((through, _)) => order.status.can_become(through) && through.can_become(step.to),
            None => order.status.can_become(step.to),
        };
        if !allowed {
            // A bug, not an outage: retrying would ask the same.
            return Err(StepError::Refused(
                format!("{:?} cannot become {:?}", order.status, step.to).into(),
            ));
        }
        let now = self.clock.now();
        let notification = notification_for(order, step.to, step.rejection.as_ref(), now);
        let row = TransitionRow {
            order_id: order.order_id,
            from_status: order.status,
            to_status: step.to,
            delivery: step.delivery.clone(),
            rejection: step.rejection.clone(),
            at: now,
            via_status: step.via.map(|(s, _)| s),
            via_at: step.via.map(|(_, at)| at),
            settled: step.settled,
            notification,
        };
        let moved = match self
            .write(OrderWrite::Transition(Box::new(row)), deadline)
            .await?
        {
            OrderWritten::Moved(moved) => moved,
            other => return Err(StepError::Refused(format!("internal: {other:?}").into())),
        };
        if !moved {
            *order = self.reload(order.order_id, deadline).await?;
            return Ok(());
        }
        if let Some((through, at)) = step.via {
            order.status = through;
            order.history.push((through, at));
            self.announce(order);
        }
        order.status = step.to;
        order.updated_at = now;
        order.history.push((step.to, now));
        order.settled = step.settled;
        if step.to.is_decided() {
            self.monitor.record_decision(
                step.to.as_str(),
                step.rejection.as_ref().map(|r| r.reason.as_str()),
            );
        }
        if step.delivery.is_some() {
            order.delivery = step.delivery;
        }
        if step.rejection.is_some() {
            order.rejection = step.rejection;
        }
        self.announce(order);
        Ok(())
    }

    /// Records that every reservation of this order is released.
    pub(super) async fn settle(
        &self,
        order: &mut Order,
        deadline: &Deadline,
    ) -> Result<(), StepError> {
        self.write(OrderWrite::Settle(order.order_id), deadline)
            .await?;
        order.settled = true;
        Ok(())
    }

    /// The order as stored now.
    pub(super) async fn reload(
        &self,
        order_id: Uuid,
        deadline: &Deadline,
    ) -> Result<Order, StepError> {
        deadline
            .bound(self.get(order_id))
            .await??
            .ok_or_else(|| StepError::Refused(format!("order {order_id} is gone").into()))
    }

    /// Announces the order's current status on the in-process stream; a step on the way
    /// (`received`, `reserved`) also on `order.events` when `ORDER_EVENTS=all`, without waiting.
    /// A decision's events go out through [`Records::publish_decision`], confirmed, by
    /// whoever decided it.
    pub(super) fn announce(&self, order: &Order) {
        let at = order.history.last().map_or(order.updated_at, |(_, at)| *at);
        let _ = self.events.send(OrderEvent {
            order_id: order.order_id,
            status: order.status,
            at,
        });
        if order.status.is_decided() || self.scope != EventScope::All {
            return;
        }
        let Some(event) = order_event(order) else {
            return;
        };
        let records = self.clone();
        let span = event_span(&event.key);
        tokio::spawn(
            async move {
                if let Err(e) = records.publish(&event).await {
                    tracing::warn!(order_id = %event.order_id, key = %event.key, error = %e, "event not published");
                }
            }
            .instrument(span),
        );
    }

    /// Announces every step of an order written once, decided (see [`Records::announce`]):
    /// the steps on the way, then the decision.
    pub(super) fn announce_steps(&self, order: &Order) {
        let on_the_way = order.history.len().saturating_sub(1);
        for (i, &(status, at)) in order.history.iter().take(on_the_way).enumerate() {
            if self.scope == EventScope::All {
                // Published as the order was at that step.
                let mut step = order.clone();
                step.status = status;
                step.updated_at = at;
                step.history = order.history.iter().take(i + 1).copied().collect();
                step.delivery = None;
                step.rejection = None;
                self.announce(&step);
            } else {
                let _ = self.events.send(OrderEvent {
                    order_id: order.order_id,
                    status,
                    at,
                });
            }
        }
        self.announce(order);
    }

    /// Publishes a decided order's events on `order.events` — `order.<status>` and its
    /// `notification.<kind>`, both in flight at once — and returns once the broker confirmed
    /// both. Called again for the same decision (a redelivery, a retry) it publishes them again
    /// with the same ids: at least once, deduplicated by a consumer on `message_id`.
    pub(super) async fn publish_decision(&self, order: &Order) -> Result<(), StepError> {
        if !order.status.is_decided() {
            return Ok(());
        }
        let at = order.history.last().map_or(order.updated_at, |(_, at)| *at);
        let notification = notification_for(order, order.status, order.rejection.as_ref(), at)
            .map(|n| notification_event(&n));
        let events: Vec<Event> = order_event(order).into_iter().chain(notification).collect();
        // The second of the two not confirmed, as a broker might leave it.
        #[cfg(feature = "fault-injection")]
        let events = {
            let mut events = events;
            if self.faults.event_fails() {
                events.retain(|e| !e.key.starts_with("notification."));
                let published = join_all(events.iter().map(|e| self.publish(e))).await;
                tracing::debug!(
                    ?published,
                    "fault injection: the notification is not confirmed"
                );
                return Err(StepError::Transient(
                    "fault injection: the decision's event was not confirmed".into(),
                ));
            }
            events
        };
        // Both in flight at once: one wait for the broker's confirms, not one per event.
        let confirmed = join_all(
            events
                .iter()
                .map(|e| self.publish(e).instrument(event_span(&e.key))),
        )
        .await;
        for result in confirmed {
            result.map_err(|e| {
                StepError::Transient(super::Cause::of(
                    "the decision's event was not confirmed",
                    e,
                ))
            })?;
        }
        Ok(())
    }

    async fn publish(&self, event: &Event) -> Result<(), crate::messaging::PublishError> {
        self.publisher
            .publish_event(
                EXCHANGE_ORDER_EVENTS,
                &event.key,
                event.body.as_bytes(),
                event.id,
            )
            .await
    }
}

/// An event for `order.events`.
struct Event {
    /// Routing key: `order.<status>` or `notification.<kind>`.
    key: String,
    body: String,
    /// Its `message_id`: the same for every publish of the same event.
    id: Uuid,
    order_id: Uuid,
}

/// The order's current status as an event.
fn order_event(order: &Order) -> Option<Event> {
    let key = format!("order.{}", order.status.as_str());
    match serde_json::to_string(order) {
        Ok(body) => Some(Event {
            id: Uuid::new_v5(&order.order_id, key.as_bytes()),
            key,
            body,
            order_id: order.order_id,
        }),
        Err(e) => {
            tracing::error!(order_id = %order.order_id, error = %e, "order not serializable");
            None
        }
    }
}

fn notification_event(n: &NotificationRow) -> Event {
    let body = json!({
        "id": n.id, "kind": n.kind, "order_id": n.order_id, "customer_id": n.customer_id,
        "message": n.message, "suggestions": n.suggestions, "created_at": n.created_at,
    });
    Event {
        key: format!("notification.{}", n.kind),
        body: body.to_string(),
        id: n.id,
        order_id: n.order_id,
    }
}

/// The customer's notification for an order reaching `to` (none for a step on the way).
pub(super) fn notification_for(
    order: &Order,
    to: OrderStatus,
    rejection: Option<&Rejection>,
    at: DateTime<Utc>,
) -> Option<NotificationRow> {
    let kind = to.notification_kind(rejection.map(|r| r.reason))?;
    Some(NotificationRow {
        id: Uuid::new_v5(&order.order_id, kind.as_bytes()),
        customer_id: order.customer_id.clone(),
        kind: kind.to_owned(),
        order_id: order.order_id,
        message: notification_message(kind, order.order_id),
        suggestions: serde_json::to_value(
            rejection.map(Rejection::suggestions).unwrap_or_default(),
        )
        .unwrap_or_default(),
        created_at: at,
    })
}

/// The span of one publish on `order.events` (a no-op unless spans are exported).
fn event_span(key: &str) -> tracing::Span {
    if crate::telemetry::exporting() {
        tracing::debug_span!(
            target: crate::telemetry::TARGET,
            "publish",
            otel.name = format!("{EXCHANGE_ORDER_EVENTS} publish"),
            otel.kind = "producer",
            messaging.system = "rabbitmq",
            messaging.destination.name = EXCHANGE_ORDER_EVENTS,
            messaging.rabbitmq.destination.routing_key = key,
        )
    } else {
        tracing::Span::none()
    }
}

#[cfg(test)]
#[path = "transitions_tests.rs"]
mod tests;
