//! Colour themes from `themes/*.ron` (embedded; a user's `./themes/NAME.ron` or
//! `~/.config/vigil/themes/NAME.ron` overrides a built-in of the same name, and `--theme FILE`
//! loads any file). Themes are written in truecolor and adapted to what the terminal can show:
//! the nearest of the 256-colour palette, or of the 16 ANSI colours. With `NO_COLOR` set, every
//! colour is dropped and views fall back on bold, reverse, markers and an ASCII ramp.

use std::path::{Path, PathBuf};

use ratatui::style::{Color, Modifier, Style};
use serde::Deserialize;

use crate::error::{Error, Result};

/// A theme as written in its file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ThemeFile {
    name: String,
    foreground: String,
    #[serde(default = "reset")]
    background: String,
    muted: String,
    accent: String,
    border: String,
    selection: String,
    ok: String,
    warn: String,
    error: String,
    info: String,
    /// Colours of overlaid series, in order.
    series: Vec<String>,
    /// Heatmap ramp from low to high.
    heat: Vec<String>,
}

fn reset() -> String {
    "reset".into()
}

/// What the terminal can display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColorDepth {
    TrueColor,
    Ansi256,
    Ansi16,
    /// `NO_COLOR`: no colour at all.
    None,
}

impl ColorDepth {
    /// Reads `NO_COLOR`, `COLORTERM` and `TERM`.
    pub fn detect() -> Self {
        if std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()) {
            return ColorDepth::None;
        }
        let colorterm = std::env::var("COLORTERM").unwrap_or_default().to_lowercase();
        if colorterm.contains("truecolor") || colorterm.contains("24bit") {
            return ColorDepth::TrueColor;
        }
        let term = std::env::var("TERM").unwrap_or_default();
        if term.contains("256") || term.contains("direct") { ColorDepth::Ansi256 } else { ColorDepth::Ansi16 }
    }
}

/// A theme resolved for a terminal.
#[derive(Debug, Clone, PartialEq)]
pub struct Theme {
    pub name: String,
    pub depth: ColorDepth,
    pub fg: Color,
    pub bg: Color,
    pub muted: Color,
    pub accent: Color,
    pub border: Color,
    pub selection: Color,
    pub ok: Color,
    pub warn: Color,
    pub error: Color,
    pub info: Color,
    pub series: Vec<Color>,
    pub heat: Vec<Color>,
}

/// The built-in themes, embedded from `themes/`.
pub const BUILTIN_THEMES: &[(&str, &str)] = &[
    ("dark", include_str!("../../themes/dark.ron")),
    ("light", include_str!("../../themes/light.ron")),
    ("high-contrast", include_str!("../../themes/high-contrast.ron")),
    ("ansi16", include_str!("../../themes/ansi16.ron")),
];

impl Theme {
    /// Parses a theme file and adapts it to `depth`.
    pub fn parse(text: &str, origin: &Path, depth: ColorDepth) -> Result<Self> {
        let f: ThemeFile = ron::Options::default().from_str(text).map_err(|e| Error::Spec {
            path: origin.to_path_buf(),
            line: e.span.start.line,
            col: e.span.start.col,
            msg: e.code.to_string(),
        })?;
        let color = |field: &str, value: &str| -> Result<Color> {
            let c: Color = value.parse().map_err(|_| {
                let (line, col) = text
                    .lines()
                    .enumerate()
                    .find_map(|(i, l)| l.find(&format!("\"{value}\"")).map(|c| (i + 1, c + 1)))
                    .unwrap_or((1, 1));
                Error::Spec {
                    path: origin.to_path_buf(),
                    line,
                    col,
                    msg: format!(
                        "field `{field}`: {value:?} is not a colour (use a name such as \"lightblue\", \
                         \"#rrggbb\", or a 256-colour index)"
                    ),
                }
            })?;
            Ok(adapt(c, depth))
        };
        if f.series.len() < 4 || f.heat.len() < 3 {
            return Err(Error::Spec {
                path: origin.to_path_buf(),
                line: 1,
                col: 1,
                msg: "a theme needs at least 4 `series` colours and 3 `heat` colours".into(),
            });
        }
        Ok(Theme {
            name: f.name.clone(),
            depth,
            fg: color("foreground", &f.foreground)?,
            bg: color("background", &f.background)?,
            muted: color("muted", &f.muted)?,
            accent: color("accent", &f.accent)?,
            border: color("border", &f.border)?,
            selection: color("selection", &f.selection)?,
            ok: color("ok", &f.ok)?,
            warn: color("warn", &f.warn)?,
            error: color("error", &f.error)?,
            info: color("info", &f.info)?,
            series: f.series.iter().map(|s| color("series", s)).collect::<Result<_>>()?,
            heat: f.heat.iter().map(|s| color("heat", s)).collect::<Result<_>>()?,
        })
    }

    /// A built-in theme by name.
    pub fn builtin(name: &str, depth: ColorDepth) -> Option<Self> {
        BUILTIN_THEMES.iter().find(|(n, _)| *n == name).map(|(n, text)| {
            Theme::parse(text, &Path::new("themes").join(format!("{n}.ron")), depth)
                .expect("shipped themes parse (a test checks it)")
        })
    }

    /// Finds a theme by name or path: a file, then `./themes/NAME.ron`, the user's configuration
    /// folder, then the built-ins.
    pub fn find(name_or_path: &str, depth: ColorDepth) -> Result<Self> {
        let p = Path::new(name_or_path);
        if name_or_path.ends_with(".ron") || name_or_path.contains('/') {
            let text = std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?;
            return Theme::parse(&text, p, depth);
        }
        for dir in theme_dirs() {
            let f = dir.join(format!("{name_or_path}.ron"));
            if let Ok(text) = std::fs::read_to_string(&f) {
                return Theme::parse(&text, &f, depth);
            }
        }
        Theme::builtin(name_or_path, depth).ok_or_else(|| {
            Error::Invalid(format!(
                "no theme named {name_or_path:?}; built in: {}",
                BUILTIN_THEMES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            ))
        })
    }

    /// The theme names `t` cycles through.
    pub fn names() -> Vec<String> {
        BUILTIN_THEMES.iter().map(|(n, _)| n.to_string()).collect()
    }

    /// Whether colours are shown at all.
    pub fn colored(&self) -> bool {
        self.depth != ColorDepth::None
    }

    pub fn base(&self) -> Style {
        Style::default().fg(self.fg).bg(self.bg)
    }
    pub fn muted(&self) -> Style {
        if self.colored() {
            Style::default().fg(self.muted)
        } else {
            Style::default().add_modifier(Modifier::DIM)
        }
    }
    pub fn accent(&self) -> Style {
        if self.colored() {
            Style::default().fg(self.accent).add_modifier(Modifier::BOLD)
        } else {
            Style::default().add_modifier(Modifier::BOLD)
        }
    }
    pub fn border(&self) -> Style {
        Style::default().fg(self.border)
    }
    /// The selected row: reverse video without colour, so it stays visible everywhere.
    pub fn selected(&self) -> Style {
        if self.colored() {
            Style::default().bg(self.selection).add_modifier(Modifier::BOLD)
        } else {
            Style::default().add_modifier(Modifier::REVERSED)
        }
    }
    pub fn ok(&self) -> Style {
        Style::default().fg(self.ok)
    }
    pub fn warn(&self) -> Style {
        if self.colored() {
            Style::default().fg(self.warn)
        } else {
            Style::default().add_modifier(Modifier::BOLD)
        }
    }
    pub fn error(&self) -> Style {
        if self.colored() {
            Style::default().fg(self.error).add_modifier(Modifier::BOLD)
        } else {
            Style::default().add_modifier(Modifier::BOLD | Modifier::UNDERLINED)
        }
    }
    pub fn info(&self) -> Style {
        Style::default().fg(self.info)
    }
    /// The colour of series `i` (stable for a given index).
    pub fn series(&self, i: usize) -> Color {
        self.series[i % self.series.len()]
    }
    /// A heatmap colour for a value in [0, 1].
    pub fn heat(&self, v: f64) -> Color {
        let n = self.heat.len();
        let i = ((v.clamp(0.0, 1.0) * (n - 1) as f64).round() as usize).min(n - 1);
        self.heat[i]
    }
}

fn theme_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from("themes")];
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
    if let Some(c) = config {
        dirs.push(c.join("vigil").join("themes"));
    }
    dirs
}

/// The 16 ANSI colours with their usual RGB values (xterm defaults).
const ANSI16: [(Color, (u8, u8, u8)); 16] = [
    (Color::Black, (0, 0, 0)),
    (Color::Red, (205, 0, 0)),
    (Color::Green, (0, 205, 0)),
    (Color::Yellow, (205, 205, 0)),
    (Color::Blue, (0, 0, 238)),
    (Color::Magenta, (205, 0, 205)),
    (Color::Cyan, (0, 205, 205)),
    (Color::Gray, (229, 229, 229)),
    (Color::DarkGray, (127, 127, 127)),
    (Color::LightRed, (255, 0, 0)),
    (Color::LightGreen, (0, 255, 0)),
    (Color::LightYellow, (255, 255, 0)),
    (Color::LightBlue, (92, 92, 255)),
    (Color::LightMagenta, (255, 0, 255)),
    (Color::LightCyan, (0, 255, 255)),
    (Color::White, (255, 255, 255)),
];

fn dist(a: (u8, u8, u8), b: (u8, u8, u8)) -> u32 {
    let d = |x: u8, y: u8| (x as i32 - y as i32).pow(2) as u32;
    // Weighted for the eye's sensitivity (green most, blue least).
    3 * d(a.0, b.0) + 4 * d(a.1, b.1) + 2 * d(a.2, b.2)
}

/// The xterm-256 palette entry nearest to an RGB colour (6x6x6 cube or grey ramp).
fn nearest_256(rgb: (u8, u8, u8)) -> u8 {
    const LEVELS: [u8; 6] = [0, 95, 135, 175, 215, 255];
    let level = |v: u8| {
        LEVELS.iter().enumerate().min_by_key(|(_, l)| (v as i32 - **l as i32).abs()).map_or(0, |(i, _)| i)
    };
    let (r, g, b) = (level(rgb.0), level(rgb.1), level(rgb.2));
    let cube = (LEVELS[r], LEVELS[g], LEVELS[b]);
    let cube_index = 16 + 36 * r + 6 * g + b;
    let avg = (rgb.0 as u32 + rgb.1 as u32 + rgb.2 as u32) / 3;
    let grey_i = ((avg.saturating_sub(8)) / 10).min(23) as u8;
    let grey = 8 + 10 * grey_i;
    if dist(rgb, (grey, grey, grey)) < dist(rgb, cube) { 232 + grey_i } else { cube_index as u8 }
}

/// Adapts a colour to a terminal's depth.
pub fn adapt(c: Color, depth: ColorDepth) -> Color {
    match (depth, c) {
        (ColorDepth::None, _) => Color::Reset,
        (ColorDepth::TrueColor, c) => c,
        (ColorDepth::Ansi256, Color::Rgb(r, g, b)) => Color::Indexed(nearest_256((r, g, b))),
        (ColorDepth::Ansi16, Color::Rgb(r, g, b)) => {
            ANSI16.iter().min_by_key(|(_, rgb)| dist(*rgb, (r, g, b))).map_or(Color::Reset, |(c, _)| *c)
        }
        (ColorDepth::Ansi16, Color::Indexed(i)) if i >= 16 => Color::Gray,
        (_, c) => c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_theme_parses_at_every_depth() {
        for (name, _) in BUILTIN_THEMES {
            for depth in [ColorDepth::TrueColor, ColorDepth::Ansi256, ColorDepth::Ansi16, ColorDepth::None] {
                let t = Theme::builtin(name, depth).unwrap();
                let all =
                    [t.fg, t.muted, t.accent, t.ok, t.error].into_iter().chain(t.series.iter().copied());
                for c in all {
                    match depth {
                        ColorDepth::Ansi16 => {
                            assert!(!matches!(c, Color::Rgb(..) | Color::Indexed(_)), "{name}: {c:?}")
                        }
                        ColorDepth::Ansi256 => assert!(!matches!(c, Color::Rgb(..)), "{name}: {c:?}"),
                        ColorDepth::None => assert_eq!(c, Color::Reset),
                        ColorDepth::TrueColor => {}
                    }
                }
            }
        }
    }

    #[test]
    fn the_ansi16_theme_uses_only_the_16_colours() {
        let text = BUILTIN_THEMES.iter().find(|(n, _)| *n == "ansi16").unwrap().1;
        let t = Theme::parse(text, Path::new("ansi16.ron"), ColorDepth::TrueColor).unwrap();
        for c in [t.fg, t.muted, t.accent, t.border, t.selection, t.ok, t.warn, t.error, t.info]
            .into_iter()
            .chain(t.series.iter().copied())
            .chain(t.heat.iter().copied())
        {
            assert!(!matches!(c, Color::Rgb(..) | Color::Indexed(_)), "{c:?}");
        }
    }

    #[test]
    fn nearest_colours() {
        assert_eq!(nearest_256((255, 0, 0)), 196);
        assert_eq!(nearest_256((128, 128, 128)), 244);
        assert_eq!(adapt(Color::Rgb(250, 10, 10), ColorDepth::Ansi16), Color::LightRed);
    }

    #[test]
    fn a_bad_colour_names_the_field_and_place() {
        let text = BUILTIN_THEMES[0].1.replace("accent: \"", "accent: \"notacolour");
        let err = Theme::parse(&text, Path::new("t.ron"), ColorDepth::TrueColor).unwrap_err().to_string();
        assert!(err.starts_with("t.ron:") && err.contains("field `accent`"), "{err}");
        let err =
            Theme::parse("(name: \"x\")", Path::new("t.ron"), ColorDepth::TrueColor).unwrap_err().to_string();
        assert!(err.contains("foreground"), "{err}");
    }
}
