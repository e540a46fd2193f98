//! Cancellation points inside quadratic joins.
//!
//! A dropped or timed-out query stops at its operators' next yield. Most operators yield often
//! (every batch from a scan counts against the runtime's cooperative budget), but a nested-loop
//! or cross join compares one input batch with the whole other side before it asks for more or
//! gives anything back: minutes of computing between yields on large inputs. [`CancelPoints`]
//! puts a [`CancelPointExec`] above every such join and above each of its inputs; it ends the
//! stream with an error as soon as the query is cancelled or past its deadline. Below a
//! nested-loop join's probe side it also hands batches on in slices of [`SLICE_ROWS`] rows,
//! which bounds the work between two checks to that many rows against the build side.
//!
//! Invariant: a cancelled query stops within one output batch of the join or one slice of its
//! probe input, whichever comes first.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::joins::{CrossJoinExec, NestedLoopJoinExec};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::{Stream, StreamExt};

/// When a query must stop: cancelled by its consumer, or past its deadline.
#[derive(Debug)]
pub(crate) struct Stop {
    cancelled: AtomicBool,
    deadline: Instant,
    /// The timeout the deadline came from (for the error).
    timeout: Duration,
}

impl Stop {
    pub(crate) fn new(deadline: Instant, timeout: Duration) -> Arc<Stop> {
        Arc::new(Stop {
            cancelled: AtomicBool::new(false),
            deadline,
            timeout,
        })
    }

    pub(crate) fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    /// The query's error once it has to stop.
    fn error(&self) -> Option<crate::Error> {
        if self.cancelled.load(Ordering::Relaxed) {
            Some(crate::Error::Cancelled)
        } else if Instant::now() >= self.deadline {
            Some(crate::Error::Timeout(self.timeout))
        } else {
            None
        }
    }
}

/// Rows per probe batch handed to a nested-loop join. Its throughput stays: with small probe
/// batches it pairs several build rows with each at once, up to a full batch.
pub(crate) const SLICE_ROWS: usize = 64;

/// The physical optimizer rule that adds the cancellation points (runs last).
#[derive(Debug)]
pub(crate) struct CancelPoints(pub(crate) Arc<Stop>);

fn quadratic(plan: &dyn ExecutionPlan) -> bool {
    plan.is::<NestedLoopJoinExec>() || plan.is::<CrossJoinExec>()
}

impl PhysicalOptimizerRule for CancelPoints {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            if !quadratic(node.as_ref()) {
                return Ok(Transformed::no(node));
            }
            // A nested-loop join takes one probe batch (its second input) against its whole
            // build side in one go; a cross join gives back a batch per build row already.
            let nested_loop = node.is::<NestedLoopJoinExec>();
            let inputs = node
                .children()
                .into_iter()
                .enumerate()
                .map(|(i, c)| {
                    let slice = (nested_loop && i == 1).then_some(SLICE_ROWS);
                    CancelPointExec::wrap(c.clone(), &self.0, slice)
                })
                .collect();
            // The points pass their inputs' properties through: nothing to recompute.
            let join = node.replace_children(
                inputs,
                ReplaceChildrenOptions::new(ChildrenPropertiesMode::Keep),
            )?;
            Ok(Transformed::yes(CancelPointExec::wrap(join, &self.0, None)))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "cancel_points"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Passes its input's rows through unchanged (in slices of at most `slice` rows) until the
/// query must stop.
#[derive(Debug)]
pub(crate) struct CancelPointExec {
    input: Arc<dyn ExecutionPlan>,
    stop: Arc<Stop>,
    slice: Option<usize>,
}

impl CancelPointExec {
    fn wrap(
        input: Arc<dyn ExecutionPlan>,
        stop: &Arc<Stop>,
        slice: Option<usize>,
    ) -> Arc<dyn ExecutionPlan> {
        Arc::new(CancelPointExec {
            input,
            stop: stop.clone(),
            slice,
        })
    }
}

impl DisplayAs for CancelPointExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.slice {
            Some(rows) => write!(f, "CancelPointExec: slice_rows={rows}"),
            None => write!(f, "CancelPointExec"),
        }
    }
}

impl ExecutionPlan for CancelPointExec {
    fn name(&self) -> &str {
        "CancelPointExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(DataFusionError::Internal(format!(
                "CancelPointExec has one input, not {}",
                children.len()
            )));
        }
        Ok(CancelPointExec::wrap(
            children.swap_remove(0),
            &self.stop,
            self.slice,
        ))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        Ok(Box::pin(CancelPointStream {
            input: self.input.execute(partition, context)?,
            stop: self.stop.clone(),
            slice: self.slice.unwrap_or(usize::MAX),
            pending: None,
        }))
    }
}

struct CancelPointStream {
    input: SendableRecordBatchStream,
    stop: Arc<Stop>,
    slice: usize,
    /// The rest of a batch larger than a slice: the batch and where its next slice starts.
    pending: Option<(RecordBatch, usize)>,
}

impl Stream for CancelPointStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // Our error travels through DataFusion as is: the engine reports it unchanged.
        if let Some(e) = self.stop.error() {
            return Poll::Ready(Some(Err(DataFusionError::External(Box::new(e)))));
        }
        let (batch, at) = match self.pending.take() {
            Some(p) => p,
            None => match self.input.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(b))) if b.num_rows() > self.slice => (b, 0),
                other => return other,
            },
        };
        let len = self.slice.min(batch.num_rows() - at);
        let out = batch.slice(at, len);
        if at + len < batch.num_rows() {
            self.pending = Some((batch, at + len));
        }
        Poll::Ready(Some(Ok(out)))
    }
}

impl RecordBatchStream for CancelPointStream {
    fn schema(&self) -> SchemaRef {
        self.input.schema()
    }
}
