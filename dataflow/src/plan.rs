//! The typed plan between SQL and operators. Lowering turns a view's
//! DataFusion plan into a tree of [`PlanNode`]s, one per operator, holding
//! everything the operator is built from: its kind, its physical
//! expressions and the schemas they read. The plan is stored with the view
//! (as JSON, expressions in DataFusion's protobuf encoding), and the
//! runtime builds a view's operators from it, once per worker, both when
//! the view is made and at each restart. So a restart runs what was
//! stored, whatever the SQL planner would make of the query today.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::PhysicalExpr;
use datafusion_proto::physical_plan::from_proto::parse_physical_expr;
use datafusion_proto::physical_plan::to_proto::serialize_physical_expr;
use datafusion_proto::physical_plan::DefaultPhysicalExtensionCodec;
use datafusion_proto::protobuf::PhysicalExprNode;
use eddy_catalog::{Catalog, ViewDef};
use prost::Message;
use serde::de::Error as _;
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::graph::Node;
use crate::operators::aggregate::{AggSpec, Aggregate, WindowClose};
use crate::operators::filter::Filter;
use crate::operators::join::{Join, JoinSpec};
use crate::operators::project::Project;
use crate::operators::retire::Retire;
use crate::operators::session::SessionWindows;
use crate::operators::source::{Constant, Source};
use crate::operators::topn::{TopN, TopNSpec};
use crate::operators::union::Union;
use crate::operators::Operator;
use crate::watermark::EventTimeColumns;
use crate::{DataflowError, Result};

/// A sort key: its expression, the expression's type, and the direction.
pub type SortKey<E> = (E, DataType, SortOptions);

/// One operator of a view's dataflow and the nodes it reads.
#[derive(Serialize, Deserialize)]
pub struct PlanNode {
    /// Unique within the dataflow; names the operator's state in the store.
    pub id: u32,
    pub op: PlanOp,
    pub inputs: Vec<PlanNode>,
    /// The operator's output.
    pub schema: SchemaRef,
}

/// What an operator is built from. Expressions read the first input's
/// rows, except a join's, whose spec names the schema of each.
#[derive(Serialize, Deserialize)]
pub enum PlanOp {
    /// A table's or view's changes.
    Source {
        relation: u64,
        label: String,
        /// The columns read, in output order; `None` for all.
        projection: Option<Vec<usize>>,
        event_time: Option<EventTimeColumns>,
    },
    /// Rows fixed by the query.
    Constant {
        rows: PlanRows,
    },
    Filter {
        predicate: PlanExpr,
        text: String,
    },
    Project {
        exprs: Vec<PlanExpr>,
        text: String,
    },
    Aggregate(Box<AggregatePlan>),
    /// Takes a window aggregate's rows out once their retention passes.
    Retire {
        relation: u64,
        column: usize,
        after_us: i64,
    },
    Join(Box<JoinSpec<PlanExpr>>),
    TopN(Box<TopNSpec<PlanExpr>>),
    Union,
}

/// A group aggregate (DISTINCT too: one with no aggregate calls).
#[derive(Serialize, Deserialize)]
pub struct AggregatePlan {
    pub group_by: Vec<PlanExpr>,
    pub group_types: Vec<DataType>,
    pub aggregates: Vec<AggSpec<PlanExpr>>,
    pub text: String,
    pub sessions: Option<SessionWindows>,
    pub window_close: Option<WindowClose>,
}

/// A physical expression in a plan: as lowering made it, or as read back
/// from the store, to be decoded against the schema it reads.
#[derive(Clone)]
pub enum PlanExpr {
    Built(Arc<dyn PhysicalExpr>),
    Encoded(Vec<u8>),
}

impl PlanExpr {
    /// The expression, ready to evaluate over rows of `schema`.
    pub fn physical(&self, ctx: &TaskContext, schema: &Schema) -> Result<Arc<dyn PhysicalExpr>> {
        match self {
            PlanExpr::Built(expr) => Ok(expr.clone()),
            PlanExpr::Encoded(bytes) => {
                let node = PhysicalExprNode::decode(bytes.as_slice()).map_err(|e| {
                    DataflowError::Internal(format!("a stored expression cannot be read: {e}"))
                })?;
                Ok(parse_physical_expr(
                    &node,
                    ctx,
                    schema,
                    &DefaultPhysicalExtensionCodec {},
                )?)
            }
        }
    }
}

impl Serialize for PlanExpr {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let bytes = match self {
            PlanExpr::Built(expr) => {
                serialize_physical_expr(expr, &DefaultPhysicalExtensionCodec {})
                    .map_err(|e| {
                        S::Error::custom(format!("expression {expr} cannot be stored: {e}"))
                    })?
                    .encode_to_vec()
            }
            PlanExpr::Encoded(bytes) => bytes.clone(),
        };
        serializer.serialize_str(&to_hex(&bytes))
    }
}

impl<'de> Deserialize<'de> for PlanExpr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        from_hex(&text)
            .map(PlanExpr::Encoded)
            .ok_or_else(|| D::Error::custom("a stored expression is not hexadecimal"))
    }
}

/// Constant rows in a plan, stored as an Arrow IPC stream.
pub struct PlanRows(pub RecordBatch);

impl Serialize for PlanRows {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let mut bytes = Vec::new();
        let mut writer =
            StreamWriter::try_new(&mut bytes, &self.0.schema()).map_err(S::Error::custom)?;
        writer.write(&self.0).map_err(S::Error::custom)?;
        writer.finish().map_err(S::Error::custom)?;
        drop(writer);
        serializer.serialize_str(&to_hex(&bytes))
    }
}

impl<'de> Deserialize<'de> for PlanRows {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let bytes =
            from_hex(&text).ok_or_else(|| D::Error::custom("stored rows are not hexadecimal"))?;
        let mut reader = StreamReader::try_new(bytes.as_slice(), None).map_err(D::Error::custom)?;
        match reader.next() {
            Some(batch) => batch.map(PlanRows).map_err(D::Error::custom),
            None => Err(D::Error::custom("stored rows hold no batch")),
        }
    }
}

fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Serde for sort keys: Arrow's `SortOptions` has none of its own.
pub mod sort_keys {
    use super::*;

    #[derive(Serialize, Deserialize)]
    struct Key<E> {
        expr: E,
        data_type: DataType,
        descending: bool,
        nulls_first: bool,
    }

    pub fn serialize<E: Serialize, S: Serializer>(
        keys: &[SortKey<E>],
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_seq(keys.iter().map(|(expr, data_type, options)| Key {
            expr,
            data_type: data_type.clone(),
            descending: options.descending,
            nulls_first: options.nulls_first,
        }))
    }

    pub fn deserialize<'de, E: Deserialize<'de>, D: Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Vec<SortKey<E>>, D::Error> {
        let keys = Vec::<Key<E>>::deserialize(deserializer)?;
        Ok(keys
            .into_iter()
            .map(|k| {
                let options = SortOptions {
                    descending: k.descending,
                    nulls_first: k.nulls_first,
                };
                (k.expr, k.data_type, options)
            })
            .collect())
    }
}

/// Sort keys with their expressions mapped by `f`.
pub fn map_sort_keys<E, T>(
    keys: &[SortKey<E>],
    mut f: impl FnMut(&E) -> Result<T>,
) -> Result<Vec<SortKey<T>>> {
    keys.iter()
        .map(|(expr, data_type, options)| Ok((f(expr)?, data_type.clone(), *options)))
        .collect()
}

impl PlanNode {
    /// The plan as stored with its view.
    pub fn to_stored(&self) -> Result<serde_json::Value> {
        serde_json::to_value(self).map_err(|e| {
            DataflowError::Unsupported(format!("a view whose plan cannot be stored ({e})"))
        })
    }

    /// A plan read back from its view.
    pub fn from_stored(stored: &serde_json::Value) -> Result<PlanNode> {
        PlanNode::deserialize(stored).map_err(|e| {
            DataflowError::Internal(format!("the view's stored plan cannot be read: {e}"))
        })
    }

    /// The dataflow, with each operator once per worker. `catalog` says
    /// which relations only ever gain rows, which some operators use.
    pub fn build(&self, ctx: &TaskContext, catalog: &Catalog, workers: usize) -> Result<Node> {
        let mut root = self.build_nodes(ctx, workers.max(1))?;
        let append_only = |id| catalog.table_by_id(id).is_some_and(|t| t.is_stream());
        root.note_append_only(&append_only);
        Ok(root)
    }

    fn build_nodes(&self, ctx: &TaskContext, workers: usize) -> Result<Node> {
        let inputs = self
            .inputs
            .iter()
            .map(|input| input.build_nodes(ctx, workers))
            .collect::<Result<Vec<_>>>()?;
        let workers = (0..workers)
            .map(|_| self.operator(ctx))
            .collect::<Result<Vec<_>>>()?;
        Ok(Node {
            id: self.id,
            workers,
            inputs,
            schema: self.schema.clone(),
            watermarks: Vec::new(),
            counters: Default::default(),
        })
    }

    /// The schema the operator's expressions read.
    fn input_schema(&self) -> Result<&SchemaRef> {
        self.inputs
            .first()
            .map(|input| &input.schema)
            .ok_or_else(|| DataflowError::Internal("a plan operator lacks its input".into()))
    }

    fn operator(&self, ctx: &TaskContext) -> Result<Box<dyn Operator>> {
        let schema = self.schema.clone();
        Ok(match &self.op {
            PlanOp::Source {
                relation,
                label,
                projection,
                event_time,
            } => {
                let source = Source::new(*relation, label.clone(), projection.clone(), schema);
                Box::new(match event_time {
                    Some(columns) => source.with_event_time(*columns),
                    None => source,
                })
            }
            PlanOp::Constant { rows } => Box::new(Constant::new(rows.0.clone())),
            PlanOp::Filter { predicate, text } => {
                let predicate = predicate.physical(ctx, self.input_schema()?)?;
                Box::new(Filter::new(predicate, text.clone()))
            }
            PlanOp::Project { exprs, text } => {
                let input = self.input_schema()?;
                let exprs = exprs
                    .iter()
                    .map(|e| e.physical(ctx, input))
                    .collect::<Result<_>>()?;
                Box::new(Project::new(exprs, schema, text.clone()))
            }
            PlanOp::Aggregate(a) => {
                let input = self.input_schema()?;
                let group_by = a
                    .group_by
                    .iter()
                    .map(|e| e.physical(ctx, input))
                    .collect::<Result<_>>()?;
                let aggregates = a
                    .aggregates
                    .iter()
                    .map(|spec| spec.try_map(|e| e.physical(ctx, input)))
                    .collect::<Result<_>>()?;
                let mut op = Aggregate::new(
                    group_by,
                    a.group_types.clone(),
                    aggregates,
                    schema,
                    a.text.clone(),
                )?;
                if let Some(sessions) = a.sessions {
                    op = op.with_sessions(sessions)?;
                }
                if let Some(close) = a.window_close {
                    op = op.with_window_close(close);
                }
                Box::new(op)
            }
            PlanOp::Retire {
                relation,
                column,
                after_us,
            } => Box::new(Retire::new(*relation, *column, *after_us, schema)?),
            PlanOp::Join(spec) => Box::new(Join::new(
                spec.try_map(|e, schema| e.physical(ctx, schema))?,
            )?),
            PlanOp::TopN(spec) => {
                let input = self.input_schema()?;
                Box::new(TopN::new(spec.try_map(|e| e.physical(ctx, input))?)?)
            }
            PlanOp::Union => Box::new(Union::new(schema)),
        })
    }
}

/// Builds stored views' dataflows from their plans: at startup, and to
/// rebuild them from their committed state after a failed epoch.
#[derive(Clone)]
pub struct ViewBuilder {
    /// Finds the functions the plans' expressions call.
    pub ctx: Arc<TaskContext>,
    pub workers: usize,
}

impl ViewBuilder {
    pub fn build(&self, def: &ViewDef, catalog: &Catalog) -> Result<Node> {
        let root = PlanNode::from_stored(&def.plan)?.build(&self.ctx, catalog, self.workers)?;
        let (planned, own) = (root.schema.fields().len(), def.columns.len());
        if planned != own {
            return Err(DataflowError::Internal(format!(
                "its stored plan yields {planned} columns where the view has {own}"
            )));
        }
        Ok(root)
    }
}
