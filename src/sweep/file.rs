//! The sweep file (`models/*.sweep.ron`): the base spec, the parameters to vary and their
//! domains, the method, the objective, the trial budget, ASHA early stopping and the Slurm job
//! settings. [`SweepFile::load`] parses it with errors that name the file, line and column, and
//! [`SweepFile::check`] tries every domain's values on the spec, so that a sweep never starts with a
//! parameter that its trials would refuse.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::path;
use crate::error::{ConfigError, Error, Result};
use crate::ml::spec::ExperimentSpec;

/// The file name ending that marks a sweep file (kept apart from specs in `models/`).
pub const SWEEP_SUFFIX: &str = ".sweep.ron";

/// A sweep as written in its file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepFile {
    /// Name of the sweep (its id starts with it); the file's name without `.sweep.ron` if absent.
    #[serde(default)]
    pub name: Option<String>,
    /// The base spec: a name from `vigil models` or a path (relative to the sweep file).
    pub spec: String,
    /// Values every trial sets (fewer epochs for a quick sweep), by path like the parameters.
    #[serde(default)]
    pub fixed: BTreeMap<String, Value>,
    /// The parameters to vary, by spec path, and their domains.
    pub parameters: BTreeMap<String, Domain>,
    #[serde(default)]
    pub method: Method,
    pub objective: Objective,
    /// How many trials to run (a grid runs at most all its points).
    pub trials: usize,
    /// Trials running at once (`--jobs` overrides).
    #[serde(default)]
    pub jobs: Option<usize>,
    /// ASHA early stopping of weak trials.
    #[serde(default)]
    pub early_stopping: Option<Asha>,
    /// Slurm job settings for `--on slurm` (flags override each).
    #[serde(default)]
    pub slurm: SlurmOptions,
}

/// The values a parameter takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Domain {
    /// These values, as written (numbers, names, lists such as `[256, 128]`).
    List(Vec<Value>),
    /// A real number uniform in [low, high]; a grid takes `steps` evenly spaced points.
    Range {
        low: f64,
        high: f64,
        #[serde(default)]
        steps: Option<usize>,
    },
    /// A positive real number whose logarithm is uniform (learning rates); a grid takes `steps`
    /// points evenly spaced in the logarithm.
    LogUniform {
        low: f64,
        high: f64,
        #[serde(default)]
        steps: Option<usize>,
    },
    /// An integer in [low, high], both included, every `step`.
    Int {
        low: i64,
        high: i64,
        #[serde(default)]
        step: Option<i64>,
    },
}

impl Domain {
    /// What kind of domain it is, for errors and tables.
    pub fn kind(&self) -> &'static str {
        match self {
            Domain::List(_) => "List",
            Domain::Range { .. } => "Range",
            Domain::LogUniform { .. } => "LogUniform",
            Domain::Int { .. } => "Int",
        }
    }

    /// The values a grid takes, or why there are none.
    pub fn grid(&self) -> std::result::Result<Vec<Value>, String> {
        match self {
            Domain::List(v) => Ok(v.clone()),
            Domain::Range { low, high, steps } | Domain::LogUniform { low, high, steps } => {
                let n = steps.ok_or_else(|| {
                    format!("a grid needs `steps` in a {} domain (how many points to try)", self.kind())
                })?;
                let log = matches!(self, Domain::LogUniform { .. });
                let (a, b) = if log { (low.ln(), high.ln()) } else { (*low, *high) };
                Ok((0..n)
                    .map(|i| {
                        let t = if n == 1 { 0.5 } else { i as f64 / (n - 1) as f64 };
                        let x = a + t * (b - a);
                        Value::from(if log { x.exp() } else { x })
                    })
                    .collect())
            }
            Domain::Int { low, high, step } => {
                let step = step.unwrap_or(1).max(1);
                Ok((*low..=*high).step_by(step as usize).map(Value::from).collect())
            }
        }
    }

    /// The extremes and (for a list) every value: what [`SweepFile::check`] tries on the spec.
    fn probes(&self) -> Vec<Value> {
        match self {
            Domain::List(v) => v.clone(),
            Domain::Range { low, high, .. } | Domain::LogUniform { low, high, .. } => {
                vec![Value::from(*low), Value::from(*high)]
            }
            Domain::Int { low, high, .. } => vec![Value::from(*low), Value::from(*high)],
        }
    }

    /// Why the domain holds no value, if it holds none.
    fn emptiness(&self) -> Option<String> {
        match self {
            Domain::List(v) if v.is_empty() => Some("the List is empty: give at least one value".into()),
            Domain::Range { low, high, steps } | Domain::LogUniform { low, high, steps } => {
                if !(low.is_finite() && high.is_finite()) || low > high {
                    Some(format!("low {low} is not at most high {high}: the {} is empty", self.kind()))
                } else if matches!(self, Domain::LogUniform { .. }) && *low <= 0.0 {
                    Some(format!("a LogUniform needs low > 0 (got {low})"))
                } else if *steps == Some(0) {
                    Some("`steps` is 0: a grid would try nothing".into())
                } else {
                    None
                }
            }
            Domain::Int { low, high, step } => {
                if low > high {
                    Some(format!("low {low} is not at most high {high}: the Int range is empty"))
                } else if step.is_some_and(|s| s < 1) {
                    Some("`step` must be at least 1".into())
                } else {
                    None
                }
            }
            Domain::List(_) => None,
        }
    }
}

/// How the next trial's parameters are chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Method {
    /// Every combination of the domains' grid points, in order.
    Grid,
    /// Independent draws from the domains, reproducible from the seed.
    Random {
        #[serde(default)]
        seed: u64,
    },
    /// Tree-structured Parzen Estimator (Bergstra et al., 2011): random for the first `startup`
    /// trials, then drawn where good trials are dense and weak ones are not.
    Tpe {
        #[serde(default)]
        seed: u64,
        #[serde(default = "default_startup")]
        startup: usize,
    },
}

fn default_startup() -> usize {
    8
}

impl Default for Method {
    fn default() -> Self {
        Method::Random { seed: 0 }
    }
}

impl Method {
    /// Whether every trial's parameters are known before any trial ends (so all can be
    /// submitted at once, as one Slurm array job).
    pub fn is_static(&self) -> bool {
        !matches!(self, Method::Tpe { .. })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Method::Grid => "grid",
            Method::Random { .. } => "random",
            Method::Tpe { .. } => "tpe",
        }
    }
}

/// A per-epoch metric of a run (`metrics.jsonl`'s epoch lines).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Metric {
    ValAccuracy,
    ValLoss,
    ValMacroF1,
    TrainAccuracy,
    TrainLoss,
}

impl Metric {
    /// The metric's name in tables and `--json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::ValAccuracy => "val_accuracy",
            Metric::ValLoss => "val_loss",
            Metric::ValMacroF1 => "val_macro_f1",
            Metric::TrainAccuracy => "train_accuracy",
            Metric::TrainLoss => "train_loss",
        }
    }

    /// The goal that makes sense for it: losses go down.
    pub fn natural_goal(self) -> Goal {
        match self {
            Metric::ValLoss | Metric::TrainLoss => Goal::Min,
            _ => Goal::Max,
        }
    }

    /// Its value in one epoch's numbers.
    pub fn of(self, m: &crate::store::EpochMetrics) -> f64 {
        match self {
            Metric::ValAccuracy => m.val_accuracy,
            Metric::ValLoss => m.val_loss,
            Metric::ValMacroF1 => m.val_macro_f1,
            Metric::TrainAccuracy => m.train_accuracy,
            Metric::TrainLoss => m.train_loss,
        }
    }

    /// Whether it is a fraction shown in percent.
    pub fn is_fraction(self) -> bool {
        !matches!(self, Metric::ValLoss | Metric::TrainLoss)
    }
}

/// Whether the objective is minimised or maximised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Goal {
    Min,
    Max,
}

impl Goal {
    /// Whether `a` is better than `b`.
    pub fn better(self, a: f64, b: f64) -> bool {
        match self {
            Goal::Min => a < b,
            Goal::Max => a > b,
        }
    }

    /// `x` as a loss (lower is better), for samplers and rankings.
    pub fn as_loss(self, x: f64) -> f64 {
        match self {
            Goal::Min => x,
            Goal::Max => -x,
        }
    }
}

/// What the sweep optimises: a trial's best value of a metric over its epochs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Objective {
    pub metric: Metric,
    /// Min for losses, Max otherwise, when absent.
    #[serde(default)]
    pub goal: Option<Goal>,
}

impl Objective {
    pub fn goal(&self) -> Goal {
        self.goal.unwrap_or(self.metric.natural_goal())
    }
}

/// Asynchronous successive halving (Li et al., 2018): at each rung epoch a trial goes on only
/// if it is in the best 1/`reduction` of the trials that reached that rung.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Asha {
    /// The metric compared at the rungs (the objective's when absent).
    #[serde(default)]
    pub metric: Option<Metric>,
    /// Epochs at which trials are compared, increasing.
    pub rungs: Vec<usize>,
    /// Keep the best 1/reduction at each rung (3 in the ASHA paper).
    #[serde(default = "default_reduction")]
    pub reduction: usize,
}

fn default_reduction() -> usize {
    3
}

/// Slurm job settings: each becomes an `#SBATCH` line.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlurmOptions {
    #[serde(default)]
    pub partition: Option<String>,
    /// Wall-time limit, in Slurm's form (`00:30:00`, `1-00:00:00`).
    #[serde(default)]
    pub time: Option<String>,
    /// CPUs per trial.
    #[serde(default)]
    pub cpus: Option<u32>,
    /// Memory per trial (`2G`, `500M`).
    #[serde(default)]
    pub mem: Option<String>,
    /// GPUs per trial (`--gres=gpu:N`).
    #[serde(default)]
    pub gpus: Option<u32>,
    /// More `sbatch` options, as written on its command line (`--qos=short`).
    #[serde(default)]
    pub extra: Vec<String>,
    /// Submit all trials of a grid or random sweep as one array job.
    #[serde(default)]
    pub array: bool,
}

/// A sweep file read and checked, with the base spec it names.
#[derive(Debug, Clone)]
pub struct LoadedSweep {
    pub file: SweepFile,
    /// The sweep's name.
    pub name: String,
    /// The base spec, with `fixed` applied.
    pub base: ExperimentSpec,
    /// The file's text, kept with the sweep so that a resume needs nothing else.
    pub text: String,
}

impl SweepFile {
    /// Parses a sweep file's text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<SweepFile> {
        let options = ron::Options::default().with_default_extension(
            ron::extensions::Extensions::IMPLICIT_SOME | ron::extensions::Extensions::UNWRAP_VARIANT_NEWTYPES,
        );
        options.from_str(text).map_err(|e| ConfigError::from_ron(&e, text, origin).into())
    }

    /// Reads a sweep file, resolves its base spec and checks every parameter against it.
    pub fn load(path: &Path, models_dir: &Path) -> Result<LoadedSweep> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::load_text(&text, path, models_dir)
    }

    /// As [`SweepFile::load`], from text already read (a resumed sweep's saved copy).
    pub fn load_text(text: &str, path: &Path, models_dir: &Path) -> Result<LoadedSweep> {
        let file = Self::parse(text, path)?;
        let name = file.name.clone().unwrap_or_else(|| {
            let f = path.file_name().and_then(|f| f.to_str()).unwrap_or("sweep");
            f.trim_end_matches(SWEEP_SUFFIX).trim_end_matches(".ron").to_string()
        });
        // A spec path is relative to the sweep file, as a spec's data paths are to the spec.
        let beside = path.parent().map(|p| p.join(&file.spec));
        let spec_ref = match beside {
            Some(b) if (file.spec.ends_with(".ron") || file.spec.contains('/')) && b.exists() => {
                b.display().to_string()
            }
            _ => file.spec.clone(),
        };
        let (spec, _) = crate::ml::spec::resolve(&spec_ref, models_dir)?;
        let fixed: Vec<(&str, &Value)> = file.fixed.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let base = path::apply(&spec, &fixed, path)?;
        file.check(&base, text, path)?;
        Ok(LoadedSweep { file, name, base, text: text.to_string() })
    }

    /// The checks serde cannot make: a budget, known paths, non-empty domains of the right type,
    /// rungs inside the epochs.
    pub fn check(&self, base: &ExperimentSpec, text: &str, path: &Path) -> Result<()> {
        let at = |field: &str, msg: String| -> Error { ConfigError::at_field(text, path, field, msg).into() };
        if self.trials == 0 {
            return Err(at("trials", "must be at least 1".into()));
        }
        if self.jobs == Some(0) {
            return Err(at("jobs", "must be at least 1".into()));
        }
        if self.parameters.is_empty() {
            return Err(at("parameters", "name at least one parameter to vary".into()));
        }
        for (name, domain) in &self.parameters {
            if path::current(base, name).is_none() {
                return Err(path::unknown_path(base, name, path));
            }
            if let Some(why) = domain.emptiness() {
                return Err(Error::argument(format!(
                    "{}: parameter `{name}`: empty domain: {why}",
                    path.display()
                )));
            }
            if matches!(self.method, Method::Grid)
                && let Err(why) = domain.grid()
            {
                return Err(Error::argument(format!("{}: parameter `{name}`: {why}", path.display())));
            }
            let now = path::current(base, name).map(|v| path::show(&v)).unwrap_or_default();
            for probe in domain.probes() {
                path::apply(base, &[(name.as_str(), &probe)], path).map_err(|e| {
                    Error::argument(format!(
                        "parameter `{name}`: a {} domain of the wrong type for this field (the spec has {now}): {e}",
                        domain.kind()
                    ))
                })?;
            }
        }
        if let Some(asha) = &self.early_stopping {
            if asha.rungs.is_empty() {
                return Err(at("rungs", "ASHA needs at least one rung epoch".into()));
            }
            if asha.rungs.windows(2).any(|w| w[0] >= w[1]) || asha.rungs[0] == 0 {
                return Err(at(
                    "rungs",
                    format!("rung epochs {:?} must be increasing and at least 1", asha.rungs),
                ));
            }
            if asha.reduction < 2 {
                return Err(at("reduction", format!("{} keeps every trial: use at least 2", asha.reduction)));
            }
            let last = *asha.rungs.last().expect("checked non-empty");
            if last >= base.epochs && !self.parameters.contains_key("epochs") {
                return Err(at(
                    "rungs",
                    format!("rung epoch {last} is not before the trials' last epoch ({})", base.epochs),
                ));
            }
        }
        Ok(())
    }
}
