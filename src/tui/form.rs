//! The form behind `n` (new run) and `c` (clone a run): pick a spec, edit its main
//! hyperparameters, and check every field before anything starts. Focus starts on the first
//! field (epochs), since that is what people type into first; the spec row above it takes ←→.
//! The first key typed into a field just reached replaces its value, as in a selected text box
//! (Backspace edits it instead), so `n 5 ctrl-s` trains for 5 epochs, not 405.

use crate::ml::spec::{Batching, EarlyStopping, ExperimentSpec};

/// One editable field.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub label: &'static str,
    pub value: String,
    pub hint: &'static str,
    pub error: Option<String>,
}

/// The new-run or clone form.
#[derive(Debug, Clone, PartialEq)]
pub struct RunForm {
    /// The specs to choose from (new run) or the run's spec (clone).
    pub choices: Vec<ExperimentSpec>,
    pub choice: usize,
    /// The run being cloned.
    pub clone_of: Option<String>,
    pub fields: Vec<Field>,
    /// 0 is the spec selector; fields follow.
    pub focus: usize,
    /// The focused field has not been typed into since it was reached: typing replaces it.
    pub fresh: bool,
}

fn batch_text(b: Batching) -> String {
    match b {
        Batching::Full => "full".into(),
        Batching::Stochastic => "1".into(),
        Batching::Mini(n) => n.to_string(),
    }
}

impl RunForm {
    /// A form for a new run from one of `specs`.
    pub fn new_run(specs: Vec<ExperimentSpec>, preferred: &str) -> Option<Self> {
        if specs.is_empty() {
            return None;
        }
        let choice = specs.iter().position(|s| s.name == preferred).unwrap_or(0);
        let mut f = RunForm { choices: specs, choice, clone_of: None, fields: vec![], focus: 1, fresh: true };
        f.load_fields();
        Some(f)
    }

    /// A form to clone a run with edits.
    pub fn clone_run(id: &str, spec: ExperimentSpec) -> Self {
        let mut f = RunForm {
            choices: vec![spec],
            choice: 0,
            clone_of: Some(id.to_string()),
            fields: vec![],
            focus: 1,
            fresh: true,
        };
        f.load_fields();
        f
    }

    pub fn spec(&self) -> &ExperimentSpec {
        &self.choices[self.choice]
    }

    fn load_fields(&mut self) {
        let s = self.spec();
        self.fields = vec![
            Field { label: "epochs", value: s.epochs.to_string(), hint: "at least 1", error: None },
            Field {
                label: "learning rate",
                value: s.optimizer.lr().to_string(),
                hint: "a positive number",
                error: None,
            },
            Field { label: "batch size", value: batch_text(s.batch), hint: "a number, or full", error: None },
            Field { label: "seed", value: s.seed.to_string(), hint: "a whole number", error: None },
            Field {
                label: "early stop patience",
                value: s.early_stopping.as_ref().map_or("off".into(), |e| e.patience.to_string()),
                hint: "epochs, or off",
                error: None,
            },
        ];
    }

    /// Moves to the next or previous spec (only for a new run).
    pub fn cycle_spec(&mut self, forward: bool) {
        if self.clone_of.is_some() || self.choices.len() < 2 {
            return;
        }
        let n = self.choices.len();
        self.choice = if forward { (self.choice + 1) % n } else { (self.choice + n - 1) % n };
        self.load_fields();
    }

    pub fn next(&mut self) {
        self.focus = (self.focus + 1).min(self.fields.len());
        self.fresh = true;
    }

    pub fn prev(&mut self) {
        let first = if self.clone_of.is_some() { 1 } else { 0 };
        self.focus = self.focus.saturating_sub(1).max(first);
        self.fresh = true;
    }

    /// Types into the focused field; on the spec row, into the first field (a typed digit is
    /// never lost).
    pub fn type_char(&mut self, c: char) {
        if self.focus == 0 {
            self.focus = 1;
            self.fresh = true;
        }
        let f = &mut self.fields[self.focus - 1];
        if std::mem::take(&mut self.fresh) {
            f.value.clear();
        }
        f.value.push(c);
        f.error = None;
    }

    pub fn backspace(&mut self) {
        if self.focus > 0 {
            self.fresh = false;
            let f = &mut self.fields[self.focus - 1];
            f.value.pop();
            f.error = None;
        }
    }

    /// The edited spec, or `None` with the errors written into the fields.
    pub fn submit(&mut self) -> Option<ExperimentSpec> {
        let mut spec = self.spec().clone();
        let mut ok = true;
        for f in &mut self.fields {
            let v = f.value.trim().to_lowercase();
            let result: Result<(), String> = match f.label {
                "epochs" => match v.parse::<usize>() {
                    Ok(n) if n >= 1 => {
                        spec.epochs = n;
                        Ok(())
                    }
                    _ => Err(format!("{:?} is not a whole number of at least 1", f.value)),
                },
                "learning rate" => match v.parse::<f64>() {
                    Ok(x) if x.is_finite() && x > 0.0 => {
                        spec.optimizer.set_lr(x);
                        Ok(())
                    }
                    _ => Err(format!("{:?} is not a positive number", f.value)),
                },
                "batch size" => match v.as_str() {
                    "full" => {
                        spec.batch = Batching::Full;
                        Ok(())
                    }
                    "1" | "stochastic" | "sgd" => {
                        spec.batch = Batching::Stochastic;
                        Ok(())
                    }
                    n => match n.parse::<usize>() {
                        Ok(b) if b >= 1 => {
                            spec.batch = Batching::Mini(b);
                            Ok(())
                        }
                        _ => Err(format!("{:?} is not a batch size (a number, or full)", f.value)),
                    },
                },
                "seed" => match v.parse::<u64>() {
                    Ok(s) => {
                        spec.seed = s;
                        Ok(())
                    }
                    _ => Err(format!("{:?} is not a whole number", f.value)),
                },
                _ => match v.as_str() {
                    "off" | "none" | "" => {
                        spec.early_stopping = None;
                        Ok(())
                    }
                    n => match n.parse::<usize>() {
                        Ok(p) if p >= 1 => {
                            let mut es = spec.early_stopping.clone().unwrap_or(EarlyStopping {
                                monitor: Default::default(),
                                patience: p,
                                min_delta: 0.0,
                            });
                            es.patience = p;
                            spec.early_stopping = Some(es);
                            Ok(())
                        }
                        _ => Err(format!("{:?} is not a number of epochs, or off", f.value)),
                    },
                },
            };
            if let Err(e) = result {
                f.error = Some(e);
                ok = false;
            }
        }
        ok.then_some(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn specs() -> Vec<ExperimentSpec> {
        crate::ml::spec::list(Path::new("models")).into_iter().filter_map(|e| e.spec.ok()).collect()
    }

    #[test]
    fn edits_become_the_spec() {
        let mut f = RunForm::new_run(specs(), "digits-mlp").unwrap();
        assert_eq!(f.spec().name, "digits-mlp");
        f.fields[0].value = "3".into();
        f.fields[1].value = "0.01".into();
        f.fields[2].value = "full".into();
        f.fields[4].value = "off".into();
        let s = f.submit().unwrap();
        assert_eq!((s.epochs, s.optimizer.lr(), s.batch, s.early_stopping), (3, 0.01, Batching::Full, None));
    }

    #[test]
    fn typing_goes_to_the_first_field_and_replaces_its_value() {
        let mut f = RunForm::new_run(specs(), "digits-mlp").unwrap();
        assert_eq!((f.focus, f.fields[f.focus - 1].label), (1, "epochs"), "focus starts on epochs");
        f.type_char('5');
        assert_eq!(f.fields[0].value, "5", "the first digit replaces the default");
        f.type_char('0');
        assert_eq!(f.fields[0].value, "50");
        // From the spec row, digits still land in a field.
        f.prev();
        assert_eq!(f.focus, 0);
        f.type_char('7');
        assert_eq!((f.focus, f.fields[0].value.as_str()), (1, "7"));
        // Backspace edits the value instead of replacing it.
        f.next();
        let lr = f.fields[1].value.clone();
        f.backspace();
        f.type_char('9');
        assert_eq!(f.fields[1].value, format!("{}9", &lr[..lr.len() - 1]));
        assert_eq!(f.submit().unwrap().epochs, 7);
    }

    #[test]
    fn bad_values_are_marked_and_nothing_is_submitted() {
        let mut f = RunForm::new_run(specs(), "digits-mlp").unwrap();
        f.fields[0].value = "0".into();
        f.fields[1].value = "-1".into();
        f.fields[2].value = "lots".into();
        assert!(f.submit().is_none());
        assert!(f.fields[0].error.is_some() && f.fields[1].error.is_some() && f.fields[2].error.is_some());
        assert!(f.fields[3].error.is_none());
    }
}
