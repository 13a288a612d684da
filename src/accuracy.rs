//! Accuracy of predictions against actuals, as scikit-learn defines each metric: accuracy,
//! log loss, one-vs-rest ROC AUC and the confusion matrix for a classifier; RMSE, MAE and R²
//! for a regressor. Pure: the shell joins predictions and actuals.

use serde::Serialize;

/// One window's metrics; a classifier's or a regressor's fields are set, never both.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Metrics {
    /// Rows with both a prediction and an actual.
    pub rows: u64,
    pub accuracy: Option<f64>,
    /// Mean negative log of the probability given to the actual class (rows renormalized to
    /// sum 1, then clipped to [ε, 1 − ε] with ε the f64 machine epsilon).
    pub log_loss: Option<f64>,
    /// Mean over classes of each class's ROC AUC against the rest, over the classes whose
    /// actuals hold both outcomes (None when none does).
    pub auc: Option<f64>,
    /// Rows: actual class; columns: predicted class, in the order of `classes`.
    pub confusion: Option<Vec<Vec<u64>>>,
    pub rmse: Option<f64>,
    pub mae: Option<f64>,
    /// None when the actuals do not vary.
    pub r2: Option<f64>,
}

/// Each row's class probabilities and the index of its actual class.
pub fn classification(classes: usize, rows: &[(Vec<f64>, usize)]) -> Metrics {
    if rows.is_empty() {
        return Metrics::default();
    }
    let n = rows.len() as f64;
    let mut confusion = vec![vec![0u64; classes]; classes];
    let (mut right, mut loss) = (0u64, 0.0);
    for (p, actual) in rows {
        let predicted = argmax(p);
        confusion[*actual][predicted] += 1;
        right += u64::from(predicted == *actual);
        let sum: f64 = p.iter().sum();
        let q = (p[*actual] / sum).clamp(f64::EPSILON, 1.0 - f64::EPSILON);
        loss -= q.ln();
    }
    let aucs: Vec<f64> = (0..classes)
        .filter_map(|k| {
            let scored: Vec<(f64, bool)> = rows.iter().map(|(p, a)| (p[k], *a == k)).collect();
            auc(&scored)
        })
        .collect();
    Metrics {
        rows: rows.len() as u64,
        accuracy: Some(right as f64 / n),
        log_loss: Some(loss / n),
        auc: (!aucs.is_empty()).then(|| aucs.iter().sum::<f64>() / aucs.len() as f64),
        confusion: Some(confusion),
        ..Metrics::default()
    }
}

/// The first largest value's index (numpy's `argmax`).
fn argmax(p: &[f64]) -> usize {
    let mut best = 0;
    for (i, v) in p.iter().enumerate() {
        if *v > p[best] {
            best = i;
        }
    }
    best
}

/// ROC AUC of scores against labels, by the rank-sum (Mann–Whitney U) with ties given their
/// average rank; None unless both labels occur.
fn auc(scored: &[(f64, bool)]) -> Option<f64> {
    let positives = scored.iter().filter(|(_, y)| *y).count() as f64;
    let negatives = scored.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return None;
    }
    let mut order: Vec<&(f64, bool)> = scored.iter().collect();
    order.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && order[j + 1].0 == order[i].0 {
            j += 1;
        }
        // Ranks i+1 ..= j+1, averaged over the tie.
        let rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += rank * order[i..=j].iter().filter(|(_, y)| *y).count() as f64;
        i = j + 1;
    }
    Some((rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives))
}

/// Each row's prediction and actual value.
pub fn regression(rows: &[(f64, f64)]) -> Metrics {
    if rows.is_empty() {
        return Metrics::default();
    }
    let n = rows.len() as f64;
    let mean = rows.iter().map(|(_, y)| y).sum::<f64>() / n;
    let (mut squares, mut absolute, mut total) = (0.0, 0.0, 0.0);
    for (p, y) in rows {
        squares += (y - p) * (y - p);
        absolute += (y - p).abs();
        total += (y - mean) * (y - mean);
    }
    Metrics {
        rows: rows.len() as u64,
        rmse: Some((squares / n).sqrt()),
        mae: Some(absolute / n),
        r2: (total > 0.0).then(|| 1.0 - squares / total),
        ..Metrics::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: Option<f64>, b: f64) {
        let a = a.unwrap();
        assert!((a - b).abs() < 1e-12, "{a} != {b}");
    }

    #[test]
    fn classifier_metrics_follow_scikit_learns_definitions() {
        // sklearn: accuracy_score, log_loss, roc_auc_score(multi_class="ovr"), confusion_matrix
        let rows = vec![
            (vec![0.7, 0.2, 0.1], 0),
            (vec![0.1, 0.8, 0.1], 1),
            (vec![0.3, 0.3, 0.4], 1),
            (vec![0.2, 0.2, 0.6], 2),
            (vec![0.5, 0.4, 0.1], 1),
        ];
        let m = classification(3, &rows);
        close(m.accuracy, 0.6);
        let expected_loss =
            -(0.7f64.ln() + 0.8f64.ln() + 0.3f64.ln() + 0.6f64.ln() + 0.4f64.ln()) / 5.0;
        close(m.log_loss, expected_loss);
        // Class 0: positives {0.7}, negatives {0.1, 0.3, 0.2, 0.5}: 1.0.
        // Class 1: positives {0.8, 0.3, 0.4}, negatives {0.2, 0.2}: 1.0.
        // Class 2: positives {0.6}, negatives {0.1, 0.1, 0.4, 0.1}: 1.0.
        close(m.auc, 1.0);
        assert_eq!(
            m.confusion,
            Some(vec![vec![1, 0, 0], vec![1, 1, 1], vec![0, 0, 1]])
        );
        // Ties count half: positives {0.5}, negatives {0.5, 0.2}.
        close(auc(&[(0.5, true), (0.5, false), (0.2, false)]), 0.75);
        assert_eq!(auc(&[(0.5, true)]), None);
    }

    #[test]
    fn regressor_metrics() {
        let m = regression(&[(2.5, 3.0), (0.0, -0.5), (2.0, 2.0), (8.0, 7.0)]);
        // sklearn's r2_score docs example: 0.948...; MSE 0.375.
        close(m.rmse, 0.375f64.sqrt());
        close(m.mae, 0.5);
        close(m.r2, 0.9486081370449679);
        assert_eq!(regression(&[(1.0, 2.0), (3.0, 2.0)]).r2, None);
    }
}
