//! The Playground: its state fed messages and keys (no threads, no terminal), its snapshots at
//! 80x24 and 160x48 in colour, in 16 colours and without colour (with the colours checked on
//! cells), the language-model engine driven with the scripted stand-in, and the headless
//! console loading `scripted:` through its real wiring.

mod common;

use std::time::Duration;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::style::{Color, Modifier};
use vigil::engine::llm::{GenerateRequest, GenerationFigures, LlmCommand, LlmEvent};
use vigil::llm::attribution::{PromptToken, TokenAttribution};
use vigil::llm::{FinishReason, GeneratedToken, ModelInfo, SamplingParams, TensorType, TokenLogprob};
use vigil::tui::app::{App, Effect, Level, Mode, Msg, View};
use vigil::tui::state::playground::{Explanation, Field, ModelStatus};
use vigil::tui::theme::ColorDepth;

use common::{render, text};

fn key(app: &mut App, code: KeyCode) -> Vec<Effect> {
    app.update(Msg::Key(KeyEvent::new(code, KeyModifiers::NONE)))
}

fn ctrl(app: &mut App, c: char) -> Vec<Effect> {
    app.update(Msg::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL)))
}

fn typed(app: &mut App, text: &str) -> Vec<Effect> {
    text.chars().flat_map(|c| key(app, KeyCode::Char(c))).collect()
}

fn command(app: &mut App, line: &str) -> Vec<Effect> {
    key(app, KeyCode::Char(':'));
    typed(app, line);
    key(app, KeyCode::Enter)
}

fn info() -> ModelInfo {
    ModelInfo {
        name: "gemma-3-270m-it-Q4_K_M".into(),
        architecture: "gemma3".into(),
        parameters: 268_098_176,
        file_bytes: 253_115_936,
        context_length: 32_768,
        vocab_size: 262_144,
        quantisations: vec![TensorType { ggml_type: "Q4K".into(), tensors: 145, bytes: 200 << 20 }],
        file_type: Some("Q4_K_M".into()),
        chat_template: Some("gemma".into()),
    }
}

/// A token with three alternatives, itself first.
fn token(id: u32, text: &str, logprob: f32) -> GeneratedToken {
    let top_logprobs = [(text, logprob), (" a", logprob - 0.7), (" the", logprob - 1.9)]
        .into_iter()
        .map(|(t, l)| TokenLogprob { token: t.into(), logprob: l })
        .collect();
    GeneratedToken { id, text: text.into(), logprob, top_logprobs }
}

/// Probabilities from certain to unlikely, and a new line.
const TOKENS: &[(&str, f32)] = &[
    (" Paris", -0.02),
    (".", -0.3),
    (" It", -0.9),
    (" is", -0.1),
    (" known", -1.6),
    (" for", -0.05),
    (" the", -0.4),
    (" Eiffel", -2.8),
    (" Tower", -0.01),
    (".", -0.2),
    ("\n", -1.2),
    ("It", -0.5),
];

const PROMPT: &str = "The capital of France is";
const PROMPT_IDS: &[u32] = &[2, 818, 5279, 529, 7001, 563];

fn attribution(position: usize) -> TokenAttribution {
    let texts = ["<bos>", "The", " capital", " of", " France", " is"];
    let values = [0.0, 0.1, 1.2, 0.05, 2.0, -0.4];
    TokenAttribution {
        position,
        id: 100 + position as u32,
        text: TOKENS[position].0.into(),
        logprob: TOKENS[position].1,
        method: vigil::llm::attribution::METHOD,
        prompt: texts
            .iter()
            .zip(values)
            .zip(PROMPT_IDS)
            .map(|((t, v), &id)| PromptToken {
                id,
                text: t.to_string(),
                occluded_logprob: TOKENS[position].1 - v,
                attribution: v,
            })
            .collect(),
        prefix: 1,
        forward_passes: 6,
        millis: 412.0,
    }
}

/// The Playground with a model loaded and the prompt typed, not yet sent.
fn loaded(depth: ColorDepth) -> App {
    let mut app = common::app_with(depth);
    key(&mut app, KeyCode::Char('i'));
    app.update(Msg::Llm(LlmEvent::Loaded(Box::new(info()))));
    key(&mut app, KeyCode::Enter);
    typed(&mut app, PROMPT);
    app
}

/// A finished completion, token 7 (" Eiffel", p 0.06) picked and explained.
fn explained(depth: ColorDepth) -> App {
    let mut app = loaded(depth);
    let effects = key(&mut app, KeyCode::Enter);
    assert_eq!(effects.len(), 1, "{effects:?}");
    app.update(Msg::Llm(LlmEvent::Started { prompt: PROMPT_IDS.to_vec() }));
    for (i, (t, l)) in TOKENS.iter().enumerate() {
        app.update(Msg::Llm(LlmEvent::Token(token(100 + i as u32, t, *l))));
    }
    app.update(Msg::Llm(LlmEvent::Finished(GenerationFigures {
        reason: Some(FinishReason::Length),
        prompt_tokens: 6,
        completion_tokens: TOKENS.len(),
        ttft_ms: 38.0,
        tokens_per_s: 61.4,
        total_ms: 217.0,
    })));
    for _ in 0..8 {
        key(&mut app, KeyCode::Right);
    }
    let effects = typed(&mut app, "e");
    assert!(
        matches!(effects.as_slice(), [Effect::Llm(LlmCommand::Explain { position: 7, .. })]),
        "{effects:?}"
    );
    app.update(Msg::Llm(LlmEvent::Explained(Box::new(attribution(7)))));
    app.status = None;
    app
}

// ---- state transitions ----------------------------------------------------------------------

#[test]
fn i_and_the_command_open_the_playground_and_llm_loads_a_model() {
    let mut app = common::app();
    key(&mut app, KeyCode::Char('i'));
    assert_eq!(app.view, View::Playground);
    key(&mut app, KeyCode::Char('1'));
    command(&mut app, "playground");
    assert_eq!(app.view, View::Playground);
    key(&mut app, KeyCode::Char('1'));
    let effects = command(&mut app, "llm scripted:delay_ms=5");
    assert_eq!(
        effects,
        vec![Effect::Llm(LlmCommand::Load { path: "scripted:delay_ms=5".into(), chat_template: None })]
    );
    assert_eq!(app.view, View::Playground);
    // A last word naming a chat template is the --chat-template.
    let effects = command(&mut app, "llm scripted:delay_ms=5 chatml");
    assert_eq!(
        effects,
        vec![Effect::Llm(LlmCommand::Load {
            path: "scripted:delay_ms=5".into(),
            chat_template: Some("chatml".into())
        })]
    );
    assert!(command(&mut app, "llm").is_empty());
    assert!(app.status.as_ref().unwrap().text.contains(":llm PATH.gguf"), "{:?}", app.status);
    // The engine's answers.
    app.update(Msg::Llm(LlmEvent::Loading("m.gguf".into())));
    assert_eq!(app.playground.model, ModelStatus::Loading("m.gguf".into()));
    app.update(Msg::Llm(LlmEvent::LoadFailed("m.gguf: not a GGUF file".into())));
    assert_eq!(app.status.as_ref().unwrap().level, Level::Error);
    assert!(app.status.as_ref().unwrap().text.contains("m.gguf"));
    assert!(text(&render(&mut app, 80, 24)).contains("m.gguf: not a GGUF file"));
}

#[test]
fn typing_the_prompt_never_reaches_the_global_keys() {
    let mut app = common::app();
    key(&mut app, KeyCode::Char('i'));
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.playground.editing, Some(Field::Prompt));
    // q would quit, 2 switch views, : open the command line, ? the help.
    assert!(typed(&mut app, "q2:?x n").is_empty());
    ctrl(&mut app, 'j');
    app.update(Msg::Key(KeyEvent::new(KeyCode::Enter, KeyModifiers::ALT)));
    typed(&mut app, "ok");
    key(&mut app, KeyCode::Backspace);
    assert_eq!(app.playground.prompt, "q2:?x n\n\no");
    assert_eq!((app.view, &app.mode, app.quit), (View::Playground, &Mode::Normal, false));
    // Tab walks the settings; they take typing the same way.
    key(&mut app, KeyCode::Tab);
    assert_eq!(app.playground.editing, Some(Field::MaxTokens));
    key(&mut app, KeyCode::Backspace);
    key(&mut app, KeyCode::Backspace);
    typed(&mut app, "12");
    key(&mut app, KeyCode::Tab);
    typed(&mut app, ".5");
    app.update(Msg::Key(KeyEvent::new(KeyCode::BackTab, KeyModifiers::SHIFT)));
    assert_eq!(app.playground.editing, Some(Field::MaxTokens));
    assert_eq!((app.playground.max_tokens.as_str(), app.playground.temperature.as_str()), ("12", "0.5"));
    // The footer shows the editing keys, not the view's.
    let screen = text(&render(&mut app, 80, 24));
    assert!(screen.lines().last().unwrap().contains("enter send"), "{screen}");
    // Esc gives the keys back: now 2 switches views.
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.playground.editing, None);
    key(&mut app, KeyCode::Char('2'));
    assert_eq!(app.view, View::Runs);
}

#[test]
fn sending_needs_a_model_a_prompt_and_settings_that_make_sense() {
    let mut app = common::app();
    key(&mut app, KeyCode::Char('i'));
    key(&mut app, KeyCode::Enter);
    typed(&mut app, "hi");
    assert!(key(&mut app, KeyCode::Enter).is_empty());
    assert!(app.status.as_ref().unwrap().text.contains("no model is loaded"), "{:?}", app.status);
    app.update(Msg::Llm(LlmEvent::Loaded(Box::new(info()))));
    for (field, bad, says) in [
        (1, "0", "max tokens: expected a whole number from 1"),
        (1, "99999", "max tokens"),
        (2, "hot", "temperature: expected a number ≥ 0"),
        (2, "-1", "temperature"),
        (3, "-4", "seed: expected a whole number"),
        (4, "50", "alternatives: expected a whole number from 0 to 10"),
    ] {
        let mut app2 = loaded(ColorDepth::TrueColor);
        for _ in 0..field {
            key(&mut app2, KeyCode::Tab);
        }
        for _ in 0..5 {
            key(&mut app2, KeyCode::Backspace);
        }
        typed(&mut app2, bad);
        assert!(key(&mut app2, KeyCode::Enter).is_empty(), "{bad}");
        let status = app2.status.as_ref().unwrap();
        assert!(status.text.contains(says) && status.level == Level::Error, "{bad}: {}", status.text);
        assert!(app2.playground.editing.is_some(), "the field stays open to fix it");
    }
    // An empty prompt.
    let mut app = common::app();
    key(&mut app, KeyCode::Char('i'));
    app.update(Msg::Llm(LlmEvent::Loaded(Box::new(info()))));
    key(&mut app, KeyCode::Enter);
    typed(&mut app, "  ");
    assert!(key(&mut app, KeyCode::Enter).is_empty());
    assert!(app.status.as_ref().unwrap().text.contains("prompt is empty"));
}

#[test]
fn a_completion_streams_in_can_be_stopped_and_its_tokens_inspected_and_explained() {
    let mut app = loaded(ColorDepth::TrueColor);
    key(&mut app, KeyCode::Esc);
    // c: chat mode, carried by the request.
    key(&mut app, KeyCode::Char('c'));
    assert!(app.playground.chat);
    key(&mut app, KeyCode::Enter);
    let effects = key(&mut app, KeyCode::Enter);
    let want = GenerateRequest {
        prompt: PROMPT.into(),
        chat: true,
        params: SamplingParams { max_tokens: 64, top_logprobs: 5, ..SamplingParams::default() },
    };
    assert_eq!(effects, vec![Effect::Llm(LlmCommand::Generate(Box::new(want)))]);
    assert_eq!(app.playground.editing, None, "sending gives the keys back");
    assert!(app.playground.busy());
    app.update(Msg::Llm(LlmEvent::Started { prompt: PROMPT_IDS.to_vec() }));
    app.update(Msg::Llm(LlmEvent::Token(token(100, " Paris", -0.02))));
    app.update(Msg::Llm(LlmEvent::Token(token(101, ".", -0.3))));
    let screen = text(&render(&mut app, 80, 24));
    assert!(screen.contains("generating… 2 tokens") && screen.contains("Paris."), "{screen}");
    // Explaining waits for the generation; x stops it.
    key(&mut app, KeyCode::Right);
    assert!(typed(&mut app, "e").is_empty());
    assert_eq!(typed(&mut app, "x"), vec![Effect::Llm(LlmCommand::Stop)]);
    app.update(Msg::Llm(LlmEvent::Finished(GenerationFigures {
        reason: None,
        prompt_tokens: 6,
        completion_tokens: 2,
        ttft_ms: 40.0,
        tokens_per_s: 50.0,
        total_ms: 60.0,
    })));
    assert!(!app.playground.busy());
    assert_eq!(app.status.as_ref().unwrap().text, "generation stopped");
    assert!(typed(&mut app, "x").is_empty(), "nothing left to stop");
    // ←→ pick tokens, within the completion.
    key(&mut app, KeyCode::Right);
    key(&mut app, KeyCode::Right);
    assert_eq!(app.playground.selected, Some(1));
    key(&mut app, KeyCode::Left);
    key(&mut app, KeyCode::Left);
    assert_eq!(app.playground.selected, Some(0));
    let screen = text(&render(&mut app, 80, 24));
    assert!(screen.contains("#0 \" Paris\"  p 0.980") && screen.contains("alternatives"), "{screen}");
    // e explains the picked token: the prompt's ids and the completion's go to the engine.
    let effects = typed(&mut app, "e");
    assert_eq!(
        effects,
        vec![Effect::Llm(LlmCommand::Explain {
            prompt: PROMPT_IDS.to_vec(),
            generated: vec![100, 101],
            position: 0
        })]
    );
    app.update(Msg::Llm(LlmEvent::Explaining { done: 2, total: 6 }));
    assert_eq!(app.playground.explanation, Some(Explanation::Running { position: 0, done: 2, total: 6 }));
    assert!(text(&render(&mut app, 80, 24)).contains("2/6 forward passes"));
    app.update(Msg::Llm(LlmEvent::Explained(Box::new(attribution(0)))));
    assert_eq!(app.playground.attribution().map(|a| a.position), Some(0));
    let screen = text(&render(&mut app, 160, 48));
    assert!(screen.contains("\" France\" +2.000") && screen.contains("not available"), "{screen}");
    // Another token: the explanation is of token 0, so it is not shown for token 1.
    key(&mut app, KeyCode::Right);
    assert!(app.playground.attribution().is_none());
    // A failure of the engine lands in the completion.
    key(&mut app, KeyCode::Enter);
    key(&mut app, KeyCode::Enter);
    app.update(Msg::Llm(LlmEvent::Failed(
        "the prompt is 40000 tokens and the model's context holds 32768".into(),
    )));
    assert!(!app.playground.busy());
    assert!(text(&render(&mut app, 80, 24)).contains("context holds 32768"));
}

// ---- snapshots and colours ------------------------------------------------------------------

#[test]
fn playground_snapshots_at_both_sizes_in_colour_16_colours_and_without() {
    for (depth, suffix) in
        [(ColorDepth::TrueColor, ""), (ColorDepth::Ansi16, "_ansi16"), (ColorDepth::None, "_no_color")]
    {
        for (w, h) in [(80u16, 24u16), (160, 48)] {
            let mut app = explained(depth);
            insta::assert_snapshot!(format!("playground_{w}x{h}{suffix}"), text(&render(&mut app, w, h)));
        }
    }
    let mut app = loaded(ColorDepth::TrueColor);
    app.status = None;
    insta::assert_snapshot!("playground_editing_80x24", text(&render(&mut app, 80, 24)));
    let mut app = common::app();
    key(&mut app, KeyCode::Char('i'));
    insta::assert_snapshot!("playground_empty_80x24", text(&render(&mut app, 80, 24)));
}

/// The cell where `needle` starts.
fn find(buf: &ratatui::buffer::Buffer, needle: &str) -> (u16, u16) {
    let w = buf.area.width;
    for y in 0..buf.area.height {
        let row: String = (0..w).map(|x| buf[(x, y)].symbol().chars().next().unwrap_or(' ')).collect();
        if let Some(i) = row.find(needle) {
            return (row[..i].chars().count() as u16, y);
        }
    }
    panic!("{needle:?} is not on the screen")
}

#[test]
fn tokens_carry_the_probability_scale_and_the_prompt_its_attribution() {
    let mut app = explained(ColorDepth::TrueColor);
    let theme = app.theme.clone();
    let buf = render(&mut app, 80, 24);
    // " Paris" p .98: ok; " known" p .20: warn; " Eiffel" p .06, picked: error, reversed.
    let (x, y) = find(&buf, "Paris");
    assert_eq!(buf[(x, y)].fg, theme.ok);
    let (x, y) = find(&buf, "known");
    assert_eq!(buf[(x, y)].fg, theme.warn);
    let (x, y) = find(&buf, "Eiffel");
    assert_eq!(buf[(x, y)].fg, theme.error);
    assert!(buf[(x, y)].modifier.contains(Modifier::REVERSED));
    // The prompt is shaded: " France" (the most) on a red, " is" (against) on a blue.
    let (x, y) = find(&buf, "France");
    let Color::Rgb(r, g, b) = buf[(x, y)].bg else { panic!("{:?}", buf[(x, y)].bg) };
    assert!(r > 60 && r as u32 > 2 * g.max(b) as u32, "{r} {g} {b}");
    let (x, y) = find(&buf, " is ");
    let Color::Rgb(r, _, b) = buf[(x + 1, y)].bg else { panic!() };
    assert!(b > r, "against is blue");

    // 16 colours: only the ANSI colours.
    let mut app = explained(ColorDepth::Ansi16);
    let buf = render(&mut app, 80, 24);
    assert!(buf.content().iter().all(|c| !matches!(c.fg, Color::Rgb(..) | Color::Indexed(_))));
    assert!(buf.content().iter().all(|c| !matches!(c.bg, Color::Rgb(..) | Color::Indexed(_))));
    let (x, y) = find(&buf, "France");
    assert_eq!(buf[(x, y)].bg, Color::LightYellow, "the strongest step of the 16-colour scale");

    // No colour: the unlikely token is underlined, the middling one dim, and no cell has a colour.
    let mut app = explained(ColorDepth::None);
    let buf = render(&mut app, 80, 24);
    for c in buf.content() {
        assert_eq!((c.fg, c.bg), (Color::Reset, Color::Reset), "{c:?}");
    }
    let (x, y) = find(&buf, "Eiffel");
    assert!(buf[(x, y)].modifier.contains(Modifier::UNDERLINED));
    let (x, y) = find(&buf, "known");
    assert!(buf[(x, y)].modifier.contains(Modifier::DIM));
    let (x, y) = find(&buf, "Paris");
    assert!(!buf[(x, y)].modifier.intersects(Modifier::DIM | Modifier::UNDERLINED));
    let t = text(&buf);
    assert!(t.contains("<.1 underlined") && t.contains(" France#"), "{t}");
}

// ---- the engine with the scripted stand-in ---------------------------------------------------

fn engine() -> (vigil::engine::Handle<LlmCommand>, std::sync::mpsc::Receiver<LlmEvent>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = vigil::engine::llm::spawn(move |e| tx.send(e).is_ok()).unwrap();
    (handle, rx)
}

/// Events until one matches `last` (within 10 s).
fn until(rx: &std::sync::mpsc::Receiver<LlmEvent>, last: impl Fn(&LlmEvent) -> bool) -> Vec<LlmEvent> {
    let mut out = Vec::new();
    loop {
        let e = rx.recv_timeout(Duration::from_secs(10)).expect("an event within 10 s");
        let done = last(&e);
        out.push(e);
        if done {
            return out;
        }
    }
}

fn generate(prompt: &str, max_tokens: usize) -> LlmCommand {
    LlmCommand::Generate(Box::new(GenerateRequest {
        prompt: prompt.into(),
        chat: false,
        params: SamplingParams { max_tokens, top_logprobs: 2, ..SamplingParams::default() },
    }))
}

#[test]
fn the_engine_loads_generates_stops_and_explains() {
    let (h, rx) = engine();
    // Nothing loaded yet.
    h.send(generate("hi", 4));
    assert!(matches!(&until(&rx, |_| true)[0], LlmEvent::Failed(m) if m.contains("no model")));
    h.send(LlmCommand::Load { path: "does-not-exist.gguf".into(), chat_template: None });
    let events = until(&rx, |e| matches!(e, LlmEvent::LoadFailed(_)));
    assert!(
        matches!(&events[..], [LlmEvent::Loading(_), LlmEvent::LoadFailed(m)] if m.contains("does-not-exist.gguf"))
    );
    h.send(LlmCommand::Load { path: "scripted:".into(), chat_template: Some("mistral".into()) });
    let events = until(&rx, |e| matches!(e, LlmEvent::LoadFailed(_)));
    assert!(
        matches!(events.last(), Some(LlmEvent::LoadFailed(m)) if m.contains("--chat-template \"mistral\": expected one of")),
        "{events:?}"
    );
    h.send(LlmCommand::Load { path: "scripted:delay_ms=2".into(), chat_template: None });
    let events = until(&rx, |e| matches!(e, LlmEvent::Loaded(_)));
    assert!(matches!(events.last(), Some(LlmEvent::Loaded(i)) if i.name == "scripted"));

    // A whole completion: its tokens, then the figures.
    h.send(generate("hi", 9));
    let events = until(&rx, |e| matches!(e, LlmEvent::Finished(_)));
    let LlmEvent::Started { prompt } = &events[0] else { panic!("{:?}", events[0]) };
    assert_eq!(prompt.len(), 3, "<bos> and two bytes");
    let text: String = events
        .iter()
        .filter_map(|e| if let LlmEvent::Token(t) = e { Some(t.text.clone()) } else { None })
        .collect();
    assert_eq!(text, "The quick");
    assert!(events.iter().any(|e| matches!(e, LlmEvent::Token(t) if t.top_logprobs.len() == 2)));
    let Some(LlmEvent::Finished(f)) = events.last() else { panic!() };
    assert_eq!((f.reason, f.prompt_tokens, f.completion_tokens), (Some(FinishReason::Length), 3, 9));
    assert!(f.ttft_ms > 0.0 && f.tokens_per_s > 0.0 && f.tokens_per_s < 1000.0, "{f:?}");

    // Stopped part-way: fewer tokens, no reason.
    h.send(generate("hi", 2000));
    until(&rx, |e| matches!(e, LlmEvent::Token(_)));
    h.send(LlmCommand::Stop);
    let events = until(&rx, |e| matches!(e, LlmEvent::Finished(_)));
    let Some(LlmEvent::Finished(f)) = events.last() else { panic!() };
    assert_eq!(f.reason, None);
    assert!(f.completion_tokens < 2000, "{f:?}");

    // An explanation: one pass per prompt token and one with the whole prompt.
    h.send(LlmCommand::Explain {
        prompt: prompt.clone(),
        generated: vec![2 + b'T' as u32, 2 + b'h' as u32],
        position: 1,
    });
    let events = until(&rx, |e| matches!(e, LlmEvent::Explained(_) | LlmEvent::Failed(_)));
    assert!(events.iter().any(|e| matches!(e, LlmEvent::Explaining { total: 3, .. })), "{events:?}");
    let Some(LlmEvent::Explained(a)) = events.last() else { panic!("{events:?}") };
    assert_eq!((a.text.as_str(), a.prefix, a.prompt.len()), ("h", 1, 3));
    // A position past the completion is refused with the reason.
    h.send(LlmCommand::Explain { prompt: prompt.clone(), generated: vec![86], position: 5 });
    assert!(matches!(&until(&rx, |_| true)[0], LlmEvent::Failed(m) if m.contains("token 5")));
    drop(h);
}

// ---- the headless console ---------------------------------------------------------------------

#[test]
fn the_headless_console_loads_the_scripted_model_and_streams_a_completion() {
    let dir = tempfile::tempdir().unwrap();
    let opts = vigil::tui::ConsoleOptions {
        llm: Some("scripted:delay_ms=1".into()),
        ..common::console_options(vigil::store::RunStore::new(dir.path()), Duration::from_millis(500))
    };
    let app = App::new(common::theme(ColorDepth::TrueColor), vigil::tui::keymap::Keymap::defaults(), vec![]);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let mut h = vigil::tui::Headless::start(&opts, app).unwrap();
        let ready = |a: &App| matches!(a.playground.model, ModelStatus::Ready(_));
        assert!(h.run_until(Duration::from_secs(10), ready).await, "the model loads");
        let press = |c| Msg::Key(KeyEvent::new(c, KeyModifiers::NONE));
        h.update(press(KeyCode::Char('i')));
        h.update(press(KeyCode::Enter));
        for c in "Say it".chars() {
            h.update(press(KeyCode::Char(c)));
        }
        h.update(press(KeyCode::Enter));
        let done = |a: &App| a.playground.completion.as_ref().is_some_and(|c| c.figures.is_some());
        assert!(h.run_until(Duration::from_secs(10), done).await, "the completion ends");
        let c = h.app.playground.completion.clone().unwrap();
        let text: String = c.tokens.iter().map(|t| t.text.as_str()).collect();
        assert_eq!(text.len(), 64);
        assert!(text.starts_with("The quick brown fox"), "{text}");
        assert_eq!(c.prompt.len(), 7);
        h.finish().await;
    });
}
