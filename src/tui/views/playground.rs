//! The Playground: a prompt to a language model and its completion, token by token. The prompt
//! panel (with the model and the mode in its title) takes the typing while it is edited; the
//! settings line below it holds max tokens, temperature, seed and alternatives; the completion
//! streams in with each token coloured by its probability (the theme's scale, or dim and
//! underline without colour, with a legend); the token panel inspects the picked token (its
//! probability and the alternatives) and shows its explanation over the prompt, whose tokens
//! are then shaded by their attribution (the Explain view's diverging scale, or its glyphs
//! without colour). At 120 columns and more the token panel stands beside the completion.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::explain::{attribution_color, signed_glyph};
use super::{fit, panel};
use crate::llm::attribution::{METHOD, NO_GRADIENTS, TokenAttribution};
use crate::tui::app::App;
use crate::tui::keymap::Action;
use crate::tui::state::playground::{Completion, Explanation, Field, ModelStatus, PlaygroundState};
use crate::tui::theme::PROBABILITY_STEPS;

pub fn draw(f: &mut Frame, app: &App, area: Rect) {
    let s = &app.playground;
    let prompt_h = (flow_prompt_lines(s, area.width.saturating_sub(2)) as u16 + 2).clamp(3, area.height / 3);
    let [prompt, settings, rest] =
        Layout::vertical([Constraint::Length(prompt_h), Constraint::Length(1), Constraint::Min(0)])
            .areas(area);
    draw_prompt(f, app, prompt);
    draw_settings(f, app, settings);
    let (completion, token) = if area.width >= 120 {
        let [c, t] = Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(rest);
        (c, t)
    } else {
        let token_h = 7.min(rest.height / 2);
        let [c, t] = Layout::vertical([Constraint::Min(0), Constraint::Length(token_h)]).areas(rest);
        (c, t)
    };
    draw_completion(f, app, completion);
    draw_token(f, app, token);
}

/// How many lines the prompt takes at `width` (for the panel's height).
fn flow_prompt_lines(s: &PlaygroundState, width: u16) -> usize {
    flow([(s.prompt.as_str(), Style::default())].into_iter(), width, None).0.len().max(1)
}

/// Lays pieces of text out in lines of `width`, breaking at their new lines and wherever a
/// line is full (tokens are short, so breaking inside one reads well). Returns the lines and
/// the line where each piece starts; `cut` replaces a new line's glyph in a piece's style
/// (a token that is nothing but a new line stays visible when selected).
fn flow<'a>(
    pieces: impl Iterator<Item = (&'a str, Style)>,
    width: u16,
    cut: Option<&str>,
) -> (Vec<Line<'static>>, Vec<usize>) {
    let width = width.max(1) as usize;
    let mut lines: Vec<Line<'static>> = vec![Line::default()];
    let mut used = 0usize;
    let mut starts = Vec::new();
    for (text, style) in pieces {
        starts.push(lines.len() - 1);
        let mut current = String::new();
        let flush = |lines: &mut Vec<Line<'static>>, current: &mut String| {
            if !current.is_empty() {
                lines.last_mut().expect("a line").spans.push(Span::styled(std::mem::take(current), style));
            }
        };
        for c in text.chars() {
            if c == '\n' {
                if let Some(mark) = cut {
                    current.push_str(mark);
                }
                flush(&mut lines, &mut current);
                lines.push(Line::default());
                used = 0;
                continue;
            }
            let w = Span::raw(c.to_string()).width();
            if used + w > width {
                flush(&mut lines, &mut current);
                lines.push(Line::default());
                used = 0;
            }
            current.push(c);
            used += w;
        }
        flush(&mut lines, &mut current);
    }
    (lines, starts)
}

fn model_label(s: &PlaygroundState) -> String {
    match &s.model {
        ModelStatus::None => "no model".into(),
        ModelStatus::Loading(p) => format!("loading {}…", p.display()),
        ModelStatus::Ready(info) => {
            format!("{} ({}, context {})", info.name, info.architecture, info.context_length)
        }
        ModelStatus::Failed(_) => "no model (loading failed)".into(),
    }
}

fn draw_prompt(f: &mut Frame, app: &App, area: Rect) {
    let s = &app.playground;
    let t = &app.theme;
    let mode = if s.chat { "chat" } else { "completion" };
    let shaded = s.attribution().filter(|_| s.editing.is_none());
    let what = match (s.editing, shaded) {
        (Some(Field::Prompt), _) => "editing".to_string(),
        (_, Some(a)) => format!("shaded by attribution to token {} {:?}", a.position, a.text),
        _ => String::new(),
    };
    let mut title = format!("Prompt · {} · {mode}", model_label(s));
    if !what.is_empty() {
        title.push_str(&format!(" · {what}"));
    }
    let block = panel(app, fit(&title, area.width));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let lines = match shaded {
        Some(a) => shaded_prompt(app, a, inner.width),
        None if s.prompt.is_empty() && s.editing != Some(Field::Prompt) => {
            let enter = app.keymap.hint(Action::Open);
            vec![Line::from(Span::styled(format!("{enter} to type a prompt"), t.muted()))]
        }
        None => {
            let mut lines = flow([(s.prompt.as_str(), Style::default())].into_iter(), inner.width, None).0;
            if s.editing == Some(Field::Prompt) {
                lines.last_mut().expect("a line").spans.push(Span::styled("█", t.accent()));
            }
            lines
        }
    };
    // The end of a long prompt is where the typing is.
    let scroll = lines.len().saturating_sub(inner.height as usize) as u16;
    f.render_widget(Paragraph::new(lines).scroll((scroll, 0)), inner);
}

/// The prompt's tokens on the diverging scale (colour), or followed by their sign glyphs.
fn shaded_prompt(app: &App, a: &TokenAttribution, width: u16) -> Vec<Line<'static>> {
    let max = a.max_abs();
    let colored = app.theme.colored();
    let texts: Vec<(String, Style)> = a
        .prompt
        .iter()
        .skip(a.prefix)
        .map(|p| {
            let v = p.attribution;
            if colored {
                (p.text.clone(), Style::default().bg(attribution_color(app, v, max)).fg(Color::Black))
            } else {
                let g = signed_glyph(v, max);
                let text = if g == ' ' { p.text.clone() } else { format!("{}{g}", p.text) };
                let strong = max > 0.0 && v.abs() >= 0.4 * max;
                let style = match (strong, v > 0.0) {
                    (true, true) => Style::default().add_modifier(Modifier::BOLD | Modifier::UNDERLINED),
                    (true, false) => Style::default().add_modifier(Modifier::DIM),
                    _ => Style::default(),
                };
                (text, style)
            }
        })
        .collect();
    flow(texts.iter().map(|(t, s)| (t.as_str(), *s)), width, Some("↵")).0
}

fn draw_settings(f: &mut Frame, app: &App, area: Rect) {
    let s = &app.playground;
    let t = &app.theme;
    let mut spans = vec![Span::raw(" ")];
    for (field, value) in [
        (Field::MaxTokens, &s.max_tokens),
        (Field::Temperature, &s.temperature),
        (Field::Seed, &s.seed),
        (Field::Alternatives, &s.alternatives),
    ] {
        spans.push(Span::styled(format!("{} ", field.label()), t.muted()));
        let editing = s.editing == Some(field);
        let style = if editing { t.selected() } else { t.base() };
        spans.push(Span::styled(format!("{value}{}", if editing { "█" } else { "" }), style));
        spans.push(Span::styled(" · ", t.muted()));
    }
    spans.push(Span::styled(if s.chat { "chat on" } else { "chat off" }, t.accent()));
    if s.editing.is_none() {
        spans.push(Span::styled(format!("  ({} edits)", app.keymap.hint(Action::NextTab)), t.muted()));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn completion_title(c: &Completion) -> String {
    let n = crate::text::plural(c.tokens.len() as u64, "token", "tokens");
    if c.running {
        return format!("Completion · generating… {n}");
    }
    match &c.figures {
        Some(fig) => {
            // The finish reasons keep the OpenAI API's names, as the service reports them.
            let reason = match fig.reason {
                Some(crate::llm::FinishReason::Stop) => "stop",
                Some(crate::llm::FinishReason::Length) => "length",
                None => "stopped",
            };
            format!(
                "Completion · {reason} · {} prompt + {n} · TTFT {:.0} ms · {:.1} tok/s",
                fig.prompt_tokens, fig.ttft_ms, fig.tokens_per_s
            )
        }
        None => format!("Completion · {n}"),
    }
}

fn draw_completion(f: &mut Frame, app: &App, area: Rect) {
    let s = &app.playground;
    let t = &app.theme;
    let Some(c) = &s.completion else {
        let text = match &s.model {
            ModelStatus::Failed(err) => vec![Line::from(Span::styled(err.clone(), t.error()))],
            ModelStatus::Loading(p) => vec![Line::from(format!("loading {}…", p.display()))],
            ModelStatus::Ready(_) => {
                let text = if s.editing.is_some() {
                    "enter sends the prompt".to_string()
                } else {
                    format!("{} to type a prompt, then enter sends it", app.keymap.hint(Action::Open))
                };
                vec![Line::from(Span::styled(text, t.muted()))]
            }
            ModelStatus::None => vec![
                Line::from("No language model is loaded."),
                Line::from(Span::styled(
                    "Start with vigil --llm PATH.gguf, or type :llm PATH.gguf",
                    t.muted(),
                )),
            ],
        };
        f.render_widget(Paragraph::new(text).block(panel(app, "Completion")), area);
        return;
    };
    let block = panel(app, fit(&completion_title(c), area.width));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let [text_area, legend_area] = Layout::vertical([Constraint::Min(0), Constraint::Length(1)]).areas(inner);
    let styles: Vec<Style> = c
        .tokens
        .iter()
        .enumerate()
        .map(|(i, tok)| {
            let style = t.probability(tok.logprob.exp());
            if Some(i) == s.selected { style.add_modifier(Modifier::REVERSED) } else { style }
        })
        .collect();
    let (mut lines, starts) = flow(
        c.tokens.iter().zip(&styles).enumerate().map(|(i, (tok, st))| {
            // The picked token shows even when it is a new line or empty.
            let text = if Some(i) == s.selected && tok.text.trim().is_empty() && !tok.text.contains('\n') {
                "·"
            } else {
                tok.text.as_str()
            };
            (text, *st)
        }),
        text_area.width,
        None,
    );
    if let Some(err) = &c.error {
        lines.push(Line::from(Span::styled(err.clone(), t.error())));
    }
    // Follow the end while it streams, the picked token once one is picked.
    let h = text_area.height as usize;
    let focus = s.selected.and_then(|i| starts.get(i).copied()).unwrap_or(lines.len().saturating_sub(1));
    let scroll = (focus + 1).saturating_sub(h) as u16;
    f.render_widget(Paragraph::new(lines).scroll((scroll, 0)), text_area);
    f.render_widget(Paragraph::new(legend(app)), legend_area);
}

/// The probability scale's legend, from the same steps the tokens are styled by.
fn legend(app: &App) -> Line<'static> {
    let t = &app.theme;
    let mut spans = vec![Span::styled("p ", t.muted())];
    if t.colored() {
        for (lowest, label) in PROBABILITY_STEPS {
            spans.push(Span::styled(format!("■ {label}  "), t.probability(lowest)));
        }
    } else {
        spans.push(Span::raw("≥.4 plain  "));
        spans.push(Span::styled(".1-.4 dim", t.probability(0.1)));
        spans.push(Span::raw("  "));
        spans.push(Span::styled("<.1 underlined", t.probability(0.0)));
    }
    Line::from(spans)
}

/// A token's text as one visible piece (new lines and tabs shown).
fn visible(text: &str) -> String {
    format!("{:?}", text)
}

fn draw_token(f: &mut Frame, app: &App, area: Rect) {
    let s = &app.playground;
    let t = &app.theme;
    let block = panel(app, "Token");
    let inner = block.inner(area);
    f.render_widget(block, area);
    let keys = format!("{}{}", app.keymap.hint(Action::Left), app.keymap.hint(Action::Right));
    let explain_key = app.keymap.hint(Action::Evaluate);
    let mut lines: Vec<Line> = Vec::new();
    let picked =
        s.completion.as_ref().zip(s.selected).and_then(|(c, i)| c.tokens.get(i).map(|tok| (c, i, tok)));
    match picked {
        None => {
            let has = s.completion.as_ref().is_some_and(|c| !c.tokens.is_empty());
            let text = if has {
                format!("{keys} pick a token: its probability and alternatives; {explain_key} explains it")
            } else {
                "the completion's tokens can be inspected here".into()
            };
            lines.push(Line::from(Span::styled(text, t.muted())));
        }
        Some((c, i, tok)) => {
            lines.push(Line::from(vec![
                Span::styled(format!("#{i} "), t.muted()),
                Span::styled(visible(&tok.text), t.accent()),
                Span::raw(format!("  p {:.3} · logprob {:.3}", tok.logprob.exp(), tok.logprob)),
            ]));
            if c.alternatives == 0 {
                lines.push(Line::from(Span::styled("no alternatives asked (alternatives 0)", t.muted())));
            } else {
                let mut spans = vec![Span::styled("alternatives ", t.muted())];
                for alt in &tok.top_logprobs {
                    spans.push(Span::styled(visible(&alt.token), t.probability(alt.logprob.exp())));
                    spans.push(Span::raw(format!(" {:.3}  ", alt.logprob.exp())));
                }
                lines.push(Line::from(spans));
            }
            match (&s.explanation, s.attribution()) {
                (Some(Explanation::Running { position, done, total }), _) => {
                    let x = app.keymap.hint(Action::StopRun);
                    lines.push(Line::from(format!(
                        "explaining #{position}: {done}/{total} forward passes… ({x} stops)"
                    )));
                }
                (_, Some(a)) => {
                    if a.max_abs() == 0.0 {
                        lines.push(Line::from("leaving any one prompt token out changes nothing"));
                    } else {
                        let mut spans = vec![Span::styled("most ", t.muted())];
                        for p in a.top(4) {
                            spans.push(Span::styled(visible(&p.text), t.accent()));
                            spans.push(Span::raw(format!(" {:+.3}  ", p.attribution)));
                        }
                        lines.push(Line::from(spans));
                    }
                    lines.push(Line::from(Span::styled(
                        format!("{METHOD} ({} passes, {:.0} ms)", a.forward_passes, a.millis),
                        t.muted(),
                    )));
                    lines.push(Line::from(Span::styled(NO_GRADIENTS, t.muted())));
                }
                _ => lines.push(Line::from(Span::styled(
                    format!("{explain_key} explains it over the prompt ({METHOD})"),
                    t.muted(),
                ))),
            }
        }
    }
    f.render_widget(Paragraph::new(lines).wrap(ratatui::widgets::Wrap { trim: false }), inner);
}
