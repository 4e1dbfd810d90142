//! Run ids cut to fit: the part that tells runs apart is the hash at the end of an id
//! (`digits-cnn-7b457e`), so a cut keeps the shortest hash prefix that is unique among the runs
//! shown (at least 4 characters, as git's short hashes) and shortens the spec in front of it,
//! never the other way round: `digits-cnn-7b457e` and `digits-cnn-7b4a01` in 12 columns read
//! `digits…-7b45` and `digits…-7b4a`, not `digits-cnn-7` twice.

/// Labels for `ids` of at most `width` characters each, distinct whenever the ids are (and the
/// width allows it), in the same order.
pub fn short_ids(ids: &[&str], width: usize) -> Vec<String> {
    if ids.iter().all(|id| id.chars().count() <= width) {
        return ids.iter().map(|s| s.to_string()).collect();
    }
    let longest_hash = ids.iter().map(|id| split(id).1.chars().count()).max().unwrap_or(0);
    let mut labels = Vec::new();
    for k in 4.min(longest_hash)..=longest_hash {
        labels = ids.iter().map(|id| cut(id, width, k)).collect();
        let mut seen = std::collections::BTreeSet::new();
        if labels.iter().all(|l| seen.insert(l.clone())) {
            return labels;
        }
    }
    labels
}

/// One id cut to `width` keeping `k` characters of its hash.
pub fn short_id(id: &str, others: &[&str], width: usize) -> String {
    let mut all: Vec<&str> = others.to_vec();
    if !all.contains(&id) {
        all.push(id);
    }
    let at = all.iter().position(|o| *o == id).expect("id is in the list");
    short_ids(&all, width).swap_remove(at)
}

/// The spec and the hash of an id (`digits-mlp-dp` and `6361a0`); an id without a dash is all
/// hash.
fn split(id: &str) -> (&str, &str) {
    id.rsplit_once('-').unwrap_or(("", id))
}

fn cut(id: &str, width: usize, k: usize) -> String {
    if id.chars().count() <= width {
        return id.to_string();
    }
    let (spec, hash) = split(id);
    let hash: String = hash.chars().take(k).collect();
    let spec_len = spec.chars().count();
    let full = format!("{spec}-{hash}");
    if spec.is_empty() || full.chars().count() <= width {
        return if spec.is_empty() { hash.chars().take(width).collect() } else { full };
    }
    // `spec…-hash`: the spec gets what the hash and two marks leave.
    let room = width.saturating_sub(hash.chars().count() + 2);
    if room == 0 {
        return hash.chars().take(width).collect();
    }
    let head: String = spec.chars().take(room.min(spec_len)).collect();
    format!("{head}…-{hash}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_keep_the_unique_part_of_the_hash() {
        let ids = ["digits-cnn-7b457e", "digits-cnn-7b4a01", "digits-mlp-dp-6361a0"];
        let l = short_ids(&ids, 12);
        assert_eq!(l, vec!["digits…-7b45", "digits…-7b4a", "digits…-6361"]);
        // Two hashes that share five characters need six.
        let ids = ["digits-cnn-7b457e", "digits-cnn-7b4571"];
        assert_eq!(short_ids(&ids, 14), vec!["digits…-7b457e", "digits…-7b4571"]);
        // Ids that fit are left whole; one cut alone keeps four hash characters.
        assert_eq!(short_ids(&["a-1", "b-2"], 10), vec!["a-1", "b-2"]);
        assert_eq!(short_id("digits-mlp-d4e5f6", &[], 15), "digits-mlp-d4e5");
        for w in 4..20 {
            for l in short_ids(&["digits-cnn-7b457e", "digits-cnn-7b4a01"], w) {
                assert!(l.chars().count() <= w, "{l} in {w}");
            }
        }
    }
}
