//! Every shipped spec parses, round-trips through the form stored with a run, and every kind of
//! malformed spec is refused with the file, line, column, field and what was allowed.

use std::path::Path;

use vigil::error::{ConfigError, Error};
use vigil::ml::spec::{self, ExperimentSpec};

#[test]
fn every_shipped_spec_parses_and_round_trips() {
    let entries = spec::list(Path::new("models"));
    assert!(!entries.is_empty(), "no specs found in models/");
    for e in entries {
        let s = e.spec.unwrap_or_else(|err| panic!("{} does not parse: {err}", e.name));
        assert_eq!(s.name, e.name, "a spec's name matches its file name");
        let again = ExperimentSpec::parse(&s.to_ron(), Path::new("stored.ron")).unwrap();
        assert_eq!(again, s, "{} changes when stored and read back", e.name);
    }
}

#[test]
fn builtin_specs_are_exactly_the_files_in_models() {
    // Driven by the folder, not by the embedded list: a spec added to models/ and forgotten in
    // the list fails here.
    let mut files: Vec<String> = std::fs::read_dir("models")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".ron") && !name.ends_with(vigil::sweep::SWEEP_SUFFIX))
        .collect();
    files.sort();
    let mut embedded: Vec<String> = spec::BUILTIN_SPECS.iter().map(|b| b.file.to_string()).collect();
    embedded.sort();
    assert_eq!(embedded, files, "every spec in models/ is embedded, and nothing else");
    for b in spec::BUILTIN_SPECS {
        let file = std::fs::read_to_string(Path::new("models").join(b.file)).unwrap();
        assert_eq!(file, b.text, "{} is embedded from models/", b.file);
    }
}

/// Parses a fixture and returns its error's (line, column, message).
fn refuse(name: &str) -> (usize, usize, String) {
    let path = Path::new("tests/fixtures/bad-specs").join(name);
    match ExperimentSpec::load(&path) {
        Err(Error::Config(ConfigError { path: p, line, col, field, msg })) => {
            assert_eq!(p, path, "the error names the file");
            let shown =
                Error::Config(ConfigError { path: p, line, col, field, msg: msg.clone() }).to_string();
            assert!(shown.starts_with(&format!("{}:{line}:{col}: ", path.display())), "{shown}");
            (line, col, msg)
        }
        Err(other) => panic!("{name}: expected a spec error, got {other}"),
        Ok(_) => panic!("{name}: a bad spec was accepted"),
    }
}

#[test]
fn unknown_field_names_the_field_and_the_allowed_ones() {
    let (line, _, msg) = refuse("unknown-field.ron");
    assert_eq!(line, 5);
    assert!(msg.contains("momentum") && msg.contains("beta1"), "{msg}");
}

#[test]
fn wrong_type_names_the_field() {
    let (line, _, msg) = refuse("wrong-type.ron");
    assert_eq!(line, 5);
    assert!(msg.contains("`lr`"), "{msg}");
}

#[test]
fn unknown_variant_lists_the_models() {
    let (line, _, msg) = refuse("unknown-variant.ron");
    assert_eq!(line, 4);
    assert!(msg.contains("Transformer") && msg.contains("Mlp") && msg.contains("TextCnn"), "{msg}");
}

#[test]
fn missing_field_is_named() {
    let (_, _, msg) = refuse("missing-field.ron");
    assert!(msg.contains("optimizer"), "{msg}");
}

#[test]
fn zero_epochs_points_at_the_field() {
    assert_eq!(refuse("zero-epochs.ron"), (7, 5, "field `epochs`: must be at least 1".to_string()));
}

#[test]
fn negative_learning_rate_points_at_lr() {
    let (line, col, msg) = refuse("negative-lr.ron");
    assert_eq!((line, col), (5, 20));
    assert!(msg.contains("`lr`") && msg.contains("positive"), "{msg}");
}

#[test]
fn a_text_model_needs_text_data() {
    let (line, _, msg) = refuse("text-model-on-images.ron");
    assert_eq!(line, 4);
    assert!(msg.contains("TextCnn model needs text data"), "{msg}");
}

#[test]
fn explicit_some_gets_a_hint() {
    let (line, _, msg) = refuse("explicit-some.ron");
    assert_eq!(line, 8);
    assert!(msg.contains("leave out `Some`"), "{msg}");
}

#[test]
fn splits_that_leave_nothing_to_train_on_are_refused() {
    let (line, _, msg) = refuse("split-too-large.ron");
    assert_eq!(line, 3);
    assert!(msg.contains("too little to train"), "{msg}");
}

#[test]
fn syntax_errors_point_at_the_place() {
    let (line, _, msg) = refuse("syntax.ron");
    assert_eq!(line, 4, "{msg}");
}

#[test]
fn resolve_finds_by_name_by_path_and_explains_misses() {
    let (s, _) = spec::resolve("digits-mlp", Path::new("models")).unwrap();
    assert_eq!(s.name, "digits-mlp");
    let (s, _) = spec::resolve("models/digits-cnn.ron", Path::new("nowhere")).unwrap();
    assert_eq!(s.name, "digits-cnn");
    // Built-in specs work from a folder without models/.
    let (s, origin) = spec::resolve("digits-logreg", Path::new("nowhere")).unwrap();
    assert_eq!(s.name, "digits-logreg");
    assert!(matches!(origin, spec::SpecOrigin::Builtin(_)));
    let err = spec::resolve("digits-transformer", Path::new("models")).unwrap_err().to_string();
    assert!(err.contains("known specs") && err.contains("digits-mlp"), "{err}");
}

#[test]
fn params_flatten_for_tables_and_filters() {
    let (s, _) = spec::resolve("digits-mlp", Path::new("models")).unwrap();
    let p = s.params();
    assert_eq!(p.get("optimizer").map(String::as_str), Some("Adam"));
    assert_eq!(p.get("optimizer.lr").map(String::as_str), Some("0.002"));
    assert_eq!(p.get("model.hidden").map(String::as_str), Some("[256, 128]"));
    assert_eq!(p.get("batch").map(String::as_str), Some("Mini(32)"));
    assert_eq!(p.get("epochs").map(String::as_str), Some("40"));
}

#[test]
fn transformer_heads_must_divide_its_width() {
    let (line, _, msg) = refuse("transformer-heads.ron");
    assert_eq!(line, 5);
    assert!(msg.contains("dim 30 must be a multiple of heads 4"), "{msg}");
}

#[test]
fn a_text_cnn_needs_widths_filters_and_text() {
    for (file, line, what) in [
        ("textcnn-widths.ron", 5, "widths"),
        ("textcnn-filters.ron", 5, "filters must be at least 1"),
        ("textcnn-on-numbers.ron", 4, "a Text or TextCnn model needs text data"),
    ] {
        let (l, _, msg) = refuse(file);
        assert_eq!(l, line, "{file}: {msg}");
        assert!(msg.contains(what), "{file}: {msg}");
    }
}

#[test]
fn a_pretrained_encoder_takes_no_tokenize_step() {
    let (line, _, msg) = refuse("pretrained-tokenize.ron");
    assert_eq!(line, 4);
    assert!(msg.contains("its own tokenizer.json"), "{msg}");
}
