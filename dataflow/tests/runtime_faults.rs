//! The dataflow runtime against faults: a failed commit, and a view whose
//! input is dropped between planning and setup.

use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, RecordBatch};
use datafusion::arrow::util::display::array_value_to_string;
use datafusion::prelude::SessionContext;
use eddy_catalog::{
    Catalog, ColumnDef, ColumnType, EddySchemaProvider, SchemaMode, TableDef, ViewColumn, ViewDef,
};
use eddy_dataflow::{DataflowError, DataflowHandle, Node, ViewBuilder};
use eddy_storage::Store;
use tokio::sync::RwLock;

const VIEW_SQL: &str = "SELECT k, count(*) AS n, sum(v) AS total FROM t GROUP BY k";

fn context(catalog: &Arc<Catalog>) -> SessionContext {
    EddySchemaProvider::context(catalog.clone(), SchemaMode::Dataflow)
}

async fn lower(ctx: &SessionContext, catalog: &Catalog, sql: &str) -> eddy_dataflow::Lowered {
    let plan = ctx.state().create_logical_plan(sql).await.expect("plan");
    let plan = ctx.state().optimize(&plan).expect("optimize");
    eddy_dataflow::lower(&plan, catalog, 1, &Default::default(), &ctx.task_ctx()).expect("lower")
}

/// Builds stored views from their plans.
fn builder(ctx: &SessionContext) -> ViewBuilder {
    ViewBuilder {
        ctx: ctx.task_ctx(),
        workers: 1,
    }
}

fn insert(catalog: &Catalog, rows: impl Iterator<Item = (i64, i64)>) {
    let (k, v): (Vec<i64>, Vec<i64>) = rows.unzip();
    let table = catalog.table("t").expect("t");
    let batch = RecordBatch::try_new(
        table.arrow_schema(),
        vec![Arc::new(Int64Array::from(k)), Arc::new(Int64Array::from(v))],
    )
    .expect("batch");
    table.insert(&[batch]).expect("insert");
}

fn view_rows(catalog: &Catalog) -> Vec<String> {
    let rows = catalog.view("v").expect("v").read_all().expect("read");
    let mut out: Vec<String> = (0..rows.num_rows())
        .map(|i| {
            rows.columns()
                .iter()
                .map(|c| array_value_to_string(c, i).expect("text"))
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect();
    out.sort();
    out
}

fn create_table(catalog: &Catalog) {
    let column = |name: &str| ColumnDef::nullable(name, ColumnType::BigInt);
    let def = TableDef {
        owner: None,
        id: 0,
        name: "t".into(),
        columns: vec![column("k"), column("v")],
        primary_key: vec![],
        kafka: None,
        generator: None,
        watermark: None,
        processing_time: None,
    };
    catalog.create_table(def, false).expect("create t");
}

/// View `v` over `t`, planned and lowered but not yet created.
async fn plan_view(ctx: &SessionContext, catalog: &Catalog) -> (ViewDef, Node) {
    let lowered = lower(ctx, catalog, VIEW_SQL).await;
    let columns = lowered
        .root
        .schema
        .fields()
        .iter()
        .map(|f| ViewColumn::of_field(f))
        .collect();
    let def = ViewDef {
        owner: None,
        id: catalog.reserve_view("v").expect("reserve"),
        name: "v".into(),
        sql: VIEW_SQL.into(),
        columns,
        depends_on: lowered.depends_on,
        explain: lowered.root.explain().join("\n"),
        plan: lowered.plan,
        error: None,
        sink_relation: None,
        key_columns: Vec::new(),
        plain_views: Vec::new(),
    };
    (def, lowered.root)
}

fn start(
    catalog: &Arc<Catalog>,
    ctx: &SessionContext,
    epoch_lock: Arc<RwLock<()>>,
) -> DataflowHandle {
    DataflowHandle::start(
        catalog.clone(),
        epoch_lock,
        Vec::new(),
        None,
        builder(ctx),
        eddy_dataflow::Timing::default(),
    )
    .expect("start")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_whose_input_was_dropped_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let catalog = Catalog::open(Store::open(dir.path()).expect("store")).expect("catalog");
    create_table(&catalog);
    let ctx = context(&catalog);
    let dataflow = start(&catalog, &ctx, Arc::new(RwLock::new(())));
    let (def, root) = plan_view(&ctx, &catalog).await;
    // A concurrent DROP comes between planning and setup.
    assert!(catalog.drop_table("t").expect("drop t"));
    let err = dataflow
        .create_view(def, root, None)
        .await
        .expect_err("the view's input is gone");
    assert!(
        matches!(err, DataflowError::Dropped(ref what) if what == "view v"),
        "{err}"
    );
    // The runtime goes on.
    dataflow.flush().await.expect("flush");
    dataflow.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_is_not_applied_twice() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("store");
    let catalog = Catalog::open(store.clone()).expect("catalog");
    create_table(&catalog);

    let ctx = context(&catalog);
    let epoch_lock = Arc::new(RwLock::new(()));
    let dataflow = start(&catalog, &ctx, epoch_lock.clone());

    insert(&catalog, (0..100).map(|i| (i % 3, i)));
    let (def, root) = plan_view(&ctx, &catalog).await;
    dataflow
        .create_view(def, root, None)
        .await
        .expect("create v");

    // The next epoch steps the aggregate, then cannot commit: it waits
    // for the epoch lock while the fault is set up.
    let reading = epoch_lock.read().await;
    insert(&catalog, (100..200).map(|i| (i % 3, i)));
    store.refuse_commits(1);
    drop(reading);
    // The epoch the insert woke fails; FLUSH may see it or come after.
    let _ = dataflow.flush().await;
    assert_eq!(store.commits_to_refuse(), 0, "no commit was refused");
    dataflow.flush().await.expect("flush after the fault");

    let expected: Vec<String> = (0..3)
        .map(|k| {
            let values: Vec<i64> = (0..200).filter(|i| i % 3 == k).collect();
            format!("{k}|{}|{}", values.len(), values.iter().sum::<i64>())
        })
        .collect();
    assert_eq!(view_rows(&catalog), expected);

    // And once more after a restart from the store.
    dataflow.stop();
    drop(dataflow);
    insert(&catalog, (200..230).map(|i| (i % 3, i)));
    let view_def = catalog.view("v").expect("v").def().clone();
    let root = builder(&ctx).build(&view_def, &catalog);
    let dataflow = DataflowHandle::start(
        catalog.clone(),
        Arc::new(RwLock::new(())),
        vec![(view_def, root)],
        None,
        builder(&ctx),
        eddy_dataflow::Timing::default(),
    )
    .expect("restart");
    dataflow.flush().await.expect("flush after restart");
    let expected: Vec<String> = (0..3)
        .map(|k| {
            let values: Vec<i64> = (0..230).filter(|i| i % 3 == k).collect();
            format!("{k}|{}|{}", values.len(), values.iter().sum::<i64>())
        })
        .collect();
    assert_eq!(view_rows(&catalog), expected);
    dataflow.stop();
}
