//! Classification metrics: accuracy, per-class precision, recall and F1, macro and weighted
//! averages and the confusion matrix, defined as scikit-learn defines them (a class with no
//! predictions has precision 0, as with `zero_division=0`).

use serde::{Deserialize, Serialize};

/// Precision, recall and F1 of one class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    pub class: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Number of true examples of the class.
    pub support: u64,
}

/// The evaluation of a model on one split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Which split ("test", "validation", "train").
    pub split: String,
    pub samples: u64,
    /// Mean cross-entropy.
    pub loss: f64,
    pub accuracy: f64,
    pub macro_precision: f64,
    pub macro_recall: f64,
    pub macro_f1: f64,
    pub weighted_f1: f64,
    pub per_class: Vec<ClassMetrics>,
    /// `confusion_matrix[true][predicted]`.
    pub confusion_matrix: Vec<Vec<u64>>,
    pub classes: Vec<String>,
}

impl Evaluation {
    /// Metrics for predictions against labels; `loss` is the mean loss already computed.
    pub fn compute(split: &str, labels: &[u32], predictions: &[u32], classes: &[String], loss: f64) -> Self {
        let k = classes.len();
        let mut cm = vec![vec![0u64; k]; k];
        for (&t, &p) in labels.iter().zip(predictions) {
            cm[t as usize][p as usize] += 1;
        }
        let n = labels.len() as u64;
        let correct: u64 = (0..k).map(|i| cm[i][i]).sum();
        let per_class: Vec<ClassMetrics> = (0..k)
            .map(|c| {
                let tp = cm[c][c] as f64;
                let predicted: u64 = (0..k).map(|t| cm[t][c]).sum();
                let support: u64 = cm[c].iter().sum();
                let precision = if predicted == 0 { 0.0 } else { tp / predicted as f64 };
                let recall = if support == 0 { 0.0 } else { tp / support as f64 };
                let f1 = if precision + recall == 0.0 {
                    0.0
                } else {
                    2.0 * precision * recall / (precision + recall)
                };
                ClassMetrics { class: classes[c].clone(), precision, recall, f1, support }
            })
            .collect();
        let mean = |f: fn(&ClassMetrics) -> f64| per_class.iter().map(f).sum::<f64>() / k.max(1) as f64;
        let weighted_f1 = if n == 0 {
            0.0
        } else {
            per_class.iter().map(|c| c.f1 * c.support as f64).sum::<f64>() / n as f64
        };
        Evaluation {
            split: split.to_string(),
            samples: n,
            loss,
            accuracy: if n == 0 { 0.0 } else { correct as f64 / n as f64 },
            macro_precision: mean(|c| c.precision),
            macro_recall: mean(|c| c.recall),
            macro_f1: mean(|c| c.f1),
            weighted_f1,
            per_class,
            confusion_matrix: cm,
            classes: classes.to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_scikit_learn() {
        // Reference, computed with scikit-learn 1.9.1:
        //   y_true = [0,0,0,1,1,1,1,2,2,2,2,2,0,1,2]
        //   y_pred = [0,1,0,1,1,2,1,2,2,0,2,1,0,1,2]
        //   accuracy_score -> 0.7333333333333333
        //   precision_recall_fscore_support(average=None) ->
        //     p = [0.75, 0.6666666666666666, 0.8], r = [0.75, 0.8, 0.6666666666666666],
        //     f = [0.75, 0.7272727272727272, 0.7272727272727272], s = [4, 5, 6]
        //   f1_score(average='macro') -> 0.7348484848484849
        //   f1_score(average='weighted') -> 0.7333333333333333
        //   confusion_matrix -> [[3,1,0],[0,4,1],[1,1,4]]
        let t = [0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 2, 0, 1, 2];
        let p = [0, 1, 0, 1, 1, 2, 1, 2, 2, 0, 2, 1, 0, 1, 2];
        let classes: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let e = Evaluation::compute("test", &t, &p, &classes, 0.0);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(e.accuracy, 0.7333333333333333));
        let want_p = [0.75, 0.6666666666666666, 0.8];
        let want_r = [0.75, 0.8, 0.6666666666666666];
        let want_f = [0.75, 0.7272727272727272, 0.7272727272727272];
        for c in 0..3 {
            assert!(close(e.per_class[c].precision, want_p[c]));
            assert!(close(e.per_class[c].recall, want_r[c]));
            assert!(close(e.per_class[c].f1, want_f[c]));
        }
        assert_eq!(e.per_class.iter().map(|c| c.support).collect::<Vec<_>>(), vec![4, 5, 6]);
        assert!(close(e.macro_f1, 0.7348484848484849));
        assert!(close(e.weighted_f1, 0.7333333333333333));
        assert_eq!(e.confusion_matrix, vec![vec![3, 1, 0], vec![0, 4, 1], vec![1, 1, 4]]);
    }

    #[test]
    fn a_class_never_predicted_has_zero_precision() {
        let classes: Vec<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
        let e = Evaluation::compute("test", &[0, 1], &[0, 0], &classes, 0.0);
        assert_eq!(e.per_class[1].precision, 0.0);
        assert_eq!(e.per_class[1].f1, 0.0);
    }
}
