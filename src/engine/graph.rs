//! The DAG of steps, with its validation state in the type: an [`Engine<Building>`] collects
//! steps, [`Engine::seal`] validates everything at once and yields an [`Engine<Built>`], the only
//! kind that can be walked.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::fmt;
use std::sync::Arc;

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;
use sha2::{Digest, Sha256};

use super::step::{Phase, Step, StepId};

/// One registered step.
#[derive(Debug, Clone)]
pub struct Node {
    /// Unique id.
    pub id: StepId,
    /// Phase it runs in.
    pub phase: Phase,
    /// Steps that must be done first (same or earlier phase), in registration order.
    pub depends_on: Vec<StepId>,
    /// The step itself.
    pub step: Arc<dyn Step>,
    /// `sha256:` of kind + payload; a changed hash on resume means "inputs changed, apply again".
    pub input_hash: String,
}

/// Type state: steps are being added.
#[derive(Debug, Default)]
pub struct Building {
    duplicates: Vec<StepId>,
}

/// Type state: validated; phases and a deterministic order are known.
#[derive(Debug)]
pub struct Built {
    /// Every node in run order: by phase, then dependencies first, ties by registration.
    order: Vec<NodeIndex>,
}

/// The step DAG.
#[derive(Debug)]
pub struct Engine<S> {
    graph: DiGraph<Node, ()>,
    ids: HashMap<StepId, NodeIndex>,
    state: S,
}

/// One problem found by [`Engine::seal`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum GraphProblem {
    /// Two steps share an id.
    DuplicateStep {
        /// The id.
        id: StepId,
    },
    /// A dependency names no registered step.
    UnknownDependency {
        /// The depending step.
        step: StepId,
        /// The missing name.
        dependency: StepId,
        /// The nearest registered id.
        suggestion: Option<StepId>,
    },
    /// A step depends on a step of a later phase, which the phase barrier can never satisfy.
    LaterPhaseDependency {
        /// The depending step.
        step: StepId,
        /// Its phase.
        phase: Phase,
        /// The dependency.
        dependency: StepId,
        /// The dependency's (later) phase.
        dependency_phase: Phase,
    },
    /// A set of steps that depend on each other in a circle.
    Cycle {
        /// The steps in the strongly connected component, sorted.
        steps: Vec<StepId>,
        /// Every dependency edge inside it (`(step, depends_on)`), sorted; removing enough of
        /// them breaks the cycle.
        edges: Vec<(StepId, StepId)>,
    },
}

impl fmt::Display for GraphProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DuplicateStep { id } => write!(f, "step {id} is registered twice"),
            Self::UnknownDependency {
                step,
                dependency,
                suggestion,
            } => {
                write!(f, "step {step} depends on unknown step {dependency}")?;
                if let Some(s) = suggestion {
                    write!(f, " (did you mean {s}?)")?;
                }
                Ok(())
            }
            Self::LaterPhaseDependency {
                step,
                phase,
                dependency,
                dependency_phase,
            } => write!(
                f,
                "step {step} (phase {phase}) depends on {dependency} from the later phase {dependency_phase}"
            ),
            Self::Cycle { steps, edges } => {
                let names: Vec<_> = steps.iter().map(StepId::as_str).collect();
                let edges: Vec<_> = edges.iter().map(|(a, b)| format!("{a} -> {b}")).collect();
                write!(
                    f,
                    "dependency cycle between {}; edges: {}",
                    names.join(", "),
                    edges.join(", ")
                )
            }
        }
    }
}

/// Everything wrong with a DAG, reported at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct GraphErrors {
    /// Problems, sorted.
    pub problems: Vec<GraphProblem>,
}

impl fmt::Display for GraphErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "the step graph is invalid ({} problem(s)):",
            self.problems.len()
        )?;
        for p in &self.problems {
            writeln!(f, "  {p}")?;
        }
        Ok(())
    }
}

impl Default for Engine<Building> {
    fn default() -> Self {
        Self::new()
    }
}

impl Engine<Building> {
    /// An empty DAG.
    #[must_use]
    pub fn new() -> Self {
        Self {
            graph: DiGraph::new(),
            ids: HashMap::new(),
            state: Building::default(),
        }
    }

    /// Register `step` as `id` in `phase`, after `depends_on`.
    pub fn add(
        &mut self,
        id: impl Into<StepId>,
        phase: Phase,
        depends_on: &[&str],
        step: Arc<dyn Step>,
    ) -> &mut Self {
        let id = id.into();
        let input_hash = input_hash(step.as_ref());
        let node = Node {
            id: id.clone(),
            phase,
            depends_on: depends_on.iter().map(|d| StepId::from(*d)).collect(),
            step,
            input_hash,
        };
        if self.ids.contains_key(&id) {
            self.state.duplicates.push(id);
            return self;
        }
        let index = self.graph.add_node(node);
        self.ids.insert(id, index);
        self
    }

    /// Validate: duplicate ids, unknown dependencies, dependencies on later phases and every
    /// cycle (with its edges), all reported together.
    ///
    /// # Errors
    /// [`GraphErrors`] listing every problem, sorted.
    pub fn seal(mut self) -> Result<Engine<Built>, GraphErrors> {
        let mut problems: Vec<GraphProblem> = self
            .state
            .duplicates
            .iter()
            .map(|id| GraphProblem::DuplicateStep { id: id.clone() })
            .collect();
        let all_ids: Vec<&str> = self.graph.node_weights().map(|n| n.id.as_str()).collect();
        let mut edges = Vec::new();
        for index in self.graph.node_indices() {
            let node = &self.graph[index];
            for dep in &node.depends_on {
                match self.ids.get(dep) {
                    Some(&dep_index) => {
                        let dep_phase = self.graph[dep_index].phase;
                        if dep_phase > node.phase {
                            problems.push(GraphProblem::LaterPhaseDependency {
                                step: node.id.clone(),
                                phase: node.phase,
                                dependency: dep.clone(),
                                dependency_phase: dep_phase,
                            });
                        }
                        edges.push((dep_index, index));
                    }
                    None => problems.push(GraphProblem::UnknownDependency {
                        step: node.id.clone(),
                        dependency: dep.clone(),
                        suggestion: nearest(dep.as_str(), &all_ids).map(StepId::from),
                    }),
                }
            }
        }
        for (from, to) in edges {
            self.graph.update_edge(from, to, ());
        }
        for component in tarjan_scc(&self.graph) {
            let is_cycle =
                component.len() > 1 || self.graph.find_edge(component[0], component[0]).is_some();
            if !is_cycle {
                continue;
            }
            let members: BTreeSet<NodeIndex> = component.iter().copied().collect();
            let mut steps: Vec<StepId> = component
                .iter()
                .map(|&i| self.graph[i].id.clone())
                .collect();
            steps.sort();
            let mut cycle_edges: Vec<(StepId, StepId)> = self
                .graph
                .edge_references()
                .filter(|e| members.contains(&e.source()) && members.contains(&e.target()))
                .map(|e| {
                    (
                        self.graph[e.target()].id.clone(),
                        self.graph[e.source()].id.clone(),
                    )
                })
                .collect();
            cycle_edges.sort();
            problems.push(GraphProblem::Cycle {
                steps,
                edges: cycle_edges,
            });
        }
        if !problems.is_empty() {
            problems.sort();
            return Err(GraphErrors { problems });
        }
        let order = self.run_order();
        Ok(Engine {
            graph: self.graph,
            ids: self.ids,
            state: Built { order },
        })
    }

    /// Kahn's algorithm; ready nodes are taken by (phase, registration index) so the order is
    /// stable and phase-major. Only called on an acyclic graph.
    fn run_order(&self) -> Vec<NodeIndex> {
        let mut indegree: Vec<usize> = self
            .graph
            .node_indices()
            .map(|i| self.graph.neighbors_directed(i, petgraph::Incoming).count())
            .collect();
        let mut ready: BinaryHeap<Reverse<(Phase, usize)>> = self
            .graph
            .node_indices()
            .filter(|i| indegree[i.index()] == 0)
            .map(|i| Reverse((self.graph[i].phase, i.index())))
            .collect();
        let mut order = Vec::with_capacity(self.graph.node_count());
        while let Some(Reverse((_, i))) = ready.pop() {
            let index = NodeIndex::new(i);
            order.push(index);
            for next in self.graph.neighbors_directed(index, petgraph::Outgoing) {
                indegree[next.index()] -= 1;
                if indegree[next.index()] == 0 {
                    ready.push(Reverse((self.graph[next].phase, next.index())));
                }
            }
        }
        // A later-phase node can become ready before an earlier-phase one; phases still run in
        // order, so group by phase keeping the topological order inside each.
        order.sort_by_key(|i| self.graph[*i].phase);
        order
    }
}

impl Engine<Built> {
    /// Every step in run order.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.state.order.iter().map(|&i| &self.graph[i])
    }

    /// The step `id`.
    #[must_use]
    pub fn node(&self, id: &str) -> Option<&Node> {
        self.ids.get(id).map(|&i| &self.graph[i])
    }

    /// Number of steps.
    #[must_use]
    pub fn len(&self) -> usize {
        self.graph.node_count()
    }

    /// Whether the DAG has no steps.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.graph.node_count() == 0
    }

    /// Steps of `phase`, in run order.
    pub fn phase_nodes(&self, phase: Phase) -> impl Iterator<Item = &Node> {
        self.nodes().filter(move |n| n.phase == phase)
    }

    /// Every step that `id` depends on, directly or not, sorted.
    #[must_use]
    pub fn transitive_dependencies(&self, id: &str) -> Vec<StepId> {
        let Some(&start) = self.ids.get(id) else {
            return Vec::new();
        };
        let mut seen = BTreeSet::new();
        let mut stack = vec![start];
        while let Some(i) = stack.pop() {
            for dep in self.graph.neighbors_directed(i, petgraph::Incoming) {
                if seen.insert(self.graph[dep].id.clone()) {
                    stack.push(dep);
                }
            }
        }
        seen.into_iter().collect()
    }

    /// Secrets each step's `apply` needs: env name -> steps, sorted.
    #[must_use]
    pub fn secret_users(&self) -> BTreeMap<String, Vec<StepId>> {
        let mut out: BTreeMap<String, Vec<StepId>> = BTreeMap::new();
        for node in self.nodes() {
            for env in node.step.secrets() {
                out.entry(env).or_default().push(node.id.clone());
            }
        }
        out
    }

    /// The critical path length given a duration per step (for benchmarks and reports): the
    /// longest chain of dependent durations, with phases as barriers.
    #[must_use]
    pub fn critical_path(
        &self,
        duration: impl Fn(&Node) -> std::time::Duration,
    ) -> std::time::Duration {
        let mut finish: HashMap<NodeIndex, std::time::Duration> = HashMap::new();
        let mut phase_start = std::time::Duration::ZERO;
        let mut total = std::time::Duration::ZERO;
        for phase in Phase::ALL {
            let mut phase_end = phase_start;
            for &i in self
                .state
                .order
                .iter()
                .filter(|&&i| self.graph[i].phase == phase)
            {
                let start = self
                    .graph
                    .neighbors_directed(i, petgraph::Incoming)
                    .filter_map(|d| finish.get(&d).copied())
                    .fold(phase_start, std::time::Duration::max);
                let end = start + duration(&self.graph[i]);
                finish.insert(i, end);
                phase_end = phase_end.max(end);
            }
            phase_start = phase_end;
            total = phase_end;
        }
        total
    }
}

fn input_hash(step: &dyn Step) -> String {
    let mut hasher = Sha256::new();
    hasher.update(step.kind().as_bytes());
    hasher.update([0]);
    hasher.update(serde_json::to_vec(&step.payload()).unwrap_or_default());
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

fn nearest<'a>(name: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(name, c), *c))
        .filter(|(score, _)| *score >= 0.85)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}
