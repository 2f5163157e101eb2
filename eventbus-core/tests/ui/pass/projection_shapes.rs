use eventbus_core::projection::{ReadModel, ReadModelOp};
use eventbus_core::{event, projection, Envelope, ReadModels};

#[event]
pub struct OrderCreated {
    pub order_id: String,
    pub customer_id: String,
    pub amount: f64,
}

#[event]
pub struct OrderShipped {
    pub order_id: String,
}

#[event]
pub struct ItemAdded {
    pub order_id: String,
    pub customer_id: String,
    pub sku: String,
    pub qty: i64,
}

#[event]
pub struct OrderCancelled {
    pub order_id: String,
    pub customer_id: String,
}

#[projection(hash = "orders:summary:{order_id}", name = "Summary", delete_on = [OrderCancelled])]
pub struct OrderSummary {
    #[set(from = OrderCreated)]
    pub order_id: String,
    #[set(from = OrderCreated, field = amount)]
    pub total: f64,
    #[set(OrderCreated = "created", OrderShipped = "shipped")]
    pub status: String,
    #[timestamp(OrderShipped)]
    pub shipped_at: Option<f64>,
    #[incr(ItemAdded)]
    pub lines: i64,
    #[incr(ItemAdded, by = qty)]
    pub units: i64,
    #[incr(OrderCancelled, by = -1)]
    pub score: i64,
    pub untouched: Option<String>,
}

#[projection(list = "customers:{customer_id}:orders", push = order_id, on = OrderCreated,
             remove_on = OrderCancelled, max_len = 100, push_back)]
pub struct CustomerOrders;

#[projection(set = "customers:{customer_id}:skus", add = sku, on = [ItemAdded])]
pub struct CustomerSkus;

#[projection(counter = "orders:count:{customer_id}", on = OrderCreated, decr_on = OrderCancelled, by = 2)]
pub struct OrderCount;

#[allow(dead_code)]
async fn reads(models: &ReadModels) -> eventbus_core::Result<()> {
    let _: Option<OrderSummary> = OrderSummary::load(models, "ord_1").await?;
    let _: Vec<String> = CustomerOrders::list(models, "cust_1", 0..10).await?;
    let _ = CustomerSkus::members(models, "cust_1").await?;
    let _: i64 = OrderCount::get(models, "cust_1").await?;
    Ok(())
}

fn main() {
    assert_eq!(<OrderSummary as ReadModel>::NAME, "Summary");
    assert_eq!(
        OrderSummary::event_types(),
        ["OrderCreated", "OrderShipped", "ItemAdded", "OrderCancelled"]
    );
    assert_eq!(OrderSummary::key("o1"), "orders:summary:o1");
    let created = Envelope::new(
        "OrderCreated",
        1,
        "svc",
        serde_json::json!({"order_id": "o1", "customer_id": "c1", "amount": 100.0}),
    );
    let ops = OrderSummary::apply(&created).unwrap();
    assert_eq!(
        ops,
        [ReadModelOp::HashSet {
            key: "orders:summary:o1".into(),
            fields: vec![
                ("order_id".into(), "o1".into()),
                ("total".into(), "100.0".into()),
                ("status".into(), "created".into()),
            ],
        }]
    );
    assert_eq!(CustomerOrders::key("c1"), "customers:c1:orders");
    assert_eq!(OrderCount::apply(&created).unwrap(), [ReadModelOp::Incr { key: "orders:count:c1".into(), by: 2 }]);
}
