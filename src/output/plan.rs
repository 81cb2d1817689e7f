//! Plan rendering: `terraform plan`-style text, JSON, and Graphviz DOT. Each renders through one
//! function into `impl Write`, in a stable order, so it can be snapshot-tested.

use std::collections::BTreeMap;
use std::io::{self, Write};

use super::machine::PlanDoc;
use crate::engine::{Op, Plan};

/// Counts of actions by op, for the totals line.
#[must_use]
pub fn totals(plan: &Plan) -> BTreeMap<Op, usize> {
    let mut out = BTreeMap::new();
    for action in plan
        .phases
        .iter()
        .flat_map(|(_, s)| s)
        .flat_map(|s| &s.actions)
    {
        *out.entry(action.op).or_insert(0) += 1;
    }
    out
}

/// Human-readable plan.
///
/// # Errors
/// IO errors from `out`.
pub fn render_text(plan: &Plan, out: &mut impl Write) -> io::Result<()> {
    let steps: usize = plan.phases.iter().map(|(_, s)| s.len()).sum();
    writeln!(
        out,
        "kubestrap plan for cluster {:?}: {steps} steps in {} phases",
        plan.cluster,
        plan.phases.len()
    )?;
    writeln!(
        out,
        "Markers: + create, ~ update, = unchanged, ! destructive, > run"
    )?;
    for (phase, steps) in &plan.phases {
        writeln!(out)?;
        writeln!(
            out,
            "Phase {}/5: {} ({} steps)",
            phase.number(),
            phase.name(),
            steps.len()
        )?;
        for step in steps {
            writeln!(out)?;
            if step.depends_on.is_empty() {
                writeln!(out, "  {}", step.id)?;
            } else {
                let deps: Vec<&str> = step.depends_on.iter().map(|d| d.as_str()).collect();
                writeln!(out, "  {} (after {})", step.id, deps.join(", "))?;
            }
            for action in &step.actions {
                writeln!(out, "    {} {}", action.op.marker(), action.target)?;
                if let Some(detail) = &action.detail {
                    writeln!(out, "        {detail}")?;
                }
            }
            if let Some(err) = &step.error {
                writeln!(out, "    error: {err}")?;
            }
        }
    }
    let t = totals(plan);
    let n = |op| t.get(&op).copied().unwrap_or(0);
    writeln!(out)?;
    writeln!(
        out,
        "Plan: {} to create, {} to update, {} to destroy, {} unchanged, {} to run.",
        n(Op::Create),
        n(Op::Update),
        n(Op::Delete),
        n(Op::Unchanged),
        n(Op::Run)
    )?;
    Ok(())
}

/// The plan as one JSON document (see [`PlanDoc`]).
///
/// # Errors
/// IO errors from `out`.
pub fn render_json(plan: &Plan, out: &mut impl Write) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, &PlanDoc::new(plan)).map_err(io::Error::other)?;
    writeln!(out)
}

/// The DAG in Graphviz DOT: one cluster per phase, edges from dependency to dependent.
///
/// # Errors
/// IO errors from `out`.
pub fn render_dot(plan: &Plan, out: &mut impl Write) -> io::Result<()> {
    writeln!(out, "digraph kubestrap {{")?;
    writeln!(
        out,
        "  label={};",
        quote(&format!("kubestrap plan: {}", plan.cluster))
    )?;
    writeln!(out, "  rankdir=LR;")?;
    writeln!(out, "  node [shape=box];")?;
    let mut edges = Vec::new();
    for (phase, steps) in &plan.phases {
        writeln!(
            out,
            "  subgraph {} {{",
            quote(&format!("cluster_{}_{}", phase.number(), phase.name()))
        )?;
        writeln!(
            out,
            "    label={};",
            quote(&format!("{} {}", phase.number(), phase.name()))
        )?;
        for step in steps {
            writeln!(out, "    {};", quote(step.id.as_str()))?;
            edges.extend(
                step.depends_on
                    .iter()
                    .map(|d| (d.as_str(), step.id.as_str())),
            );
        }
        writeln!(out, "  }}")?;
    }
    edges.sort_unstable();
    for (from, to) in edges {
        writeln!(out, "  {} -> {};", quote(from), quote(to))?;
    }
    writeln!(out, "}}")
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}
