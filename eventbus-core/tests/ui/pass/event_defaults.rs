use eventbus_core::{event, Event};

#[event]
#[derive(Debug, PartialEq)]
pub struct OrderCreated {
    pub order_id: String,
    pub total: f64,
}

#[event(name = "Order.Shipped", version = 3)]
#[derive(Debug, PartialEq)]
pub struct OrderShipped(pub String);

#[event(name = "Heartbeat")]
#[derive(Debug, PartialEq)]
pub struct Heartbeat;

#[event(version = 2)]
#[derive(Debug, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PaymentEvent {
    Authorized { amount: u64 },
    Declined { reason: String },
}

fn main() {
    assert_eq!(OrderCreated::EVENT_TYPE, "OrderCreated");
    assert_eq!(OrderCreated::VERSION, 1);
    assert_eq!(OrderShipped::EVENT_TYPE, "Order.Shipped");
    assert_eq!(OrderShipped::VERSION, 3);
    assert_eq!(Heartbeat::EVENT_TYPE, "Heartbeat");
    assert_eq!(PaymentEvent::EVENT_TYPE, "PaymentEvent");
    assert_eq!(PaymentEvent::VERSION, 2);

    let json = eventbus_core::__private::serde_json::to_value(PaymentEvent::Declined { reason: "card".into() }).unwrap();
    assert_eq!(json["kind"], "declined");
    let back: PaymentEvent = eventbus_core::__private::serde_json::from_value(json).unwrap();
    assert_eq!(back, PaymentEvent::Declined { reason: "card".into() });

    let order = OrderCreated { order_id: "o1".into(), total: 2.5 };
    let json = eventbus_core::__private::serde_json::to_string(&order).unwrap();
    assert_eq!(json, r#"{"order_id":"o1","total":2.5}"#);
}
