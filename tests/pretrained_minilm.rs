//! The real model: all-MiniLM-L6-v2 from the model cache (`scripts/fetch_models.sh minilm` puts it
//! there). Its token ids must be the Python `tokenizers` package's and its embeddings
//! sentence-transformers' (cosine >= 0.9999 per sentence) for the sentences of
//! tests/fixtures/minilm_reference.json, which bench/minilm_reference.py wrote. Without the
//! model in the cache the test says it was skipped and passes: nothing downloads at test time.

use vigil::ml::model::pretrained::{SentenceEncoder, cache_dir};

#[test]
fn minilm_matches_sentence_transformers() {
    let dir = cache_dir().join("all-minilm-l6-v2");
    if !dir.join("model.safetensors").is_file() {
        eprintln!(
            "skipped: all-MiniLM-L6-v2 is not in {} (run scripts/fetch_models.sh minilm)",
            dir.display()
        );
        return;
    }
    let text = std::fs::read_to_string("tests/fixtures/minilm_reference.json").unwrap();
    let fixture: serde_json::Value = serde_json::from_str(&text).unwrap();
    let sentences: Vec<String> =
        fixture["sentences"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect();
    let encoder = SentenceEncoder::open(&dir).unwrap();
    for (s, want) in sentences.iter().zip(fixture["ids"].as_array().unwrap()) {
        let want: Vec<u32> = want.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(encoder.pieces.ids(s).unwrap(), want, "token ids of {s:?}");
    }
    // All at once, so that the shorter sentences are padded to the longest.
    let got = encoder.embed(&sentences).unwrap();
    for ((s, g), want) in sentences.iter().zip(&got).zip(fixture["embeddings"].as_array().unwrap()) {
        let w: Vec<f32> = want.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        assert_eq!(g.len(), 384);
        let dot: f32 = g.iter().zip(&w).map(|(a, b)| a * b).sum();
        let norms = g.iter().map(|v| v * v).sum::<f32>().sqrt() * w.iter().map(|v| v * v).sum::<f32>().sqrt();
        let cosine = dot / norms;
        assert!(cosine >= 0.9999, "{s:?}: cosine {cosine} with sentence-transformers' embedding");
        let largest = g.iter().zip(&w).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        eprintln!("{s:?}: cosine {cosine:.7}, largest difference {largest:.2e}");
    }
}
