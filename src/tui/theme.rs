//! Colour themes from `themes/*.ron` (embedded; a user's `./themes/NAME.ron` or
//! `~/.config/vigil/themes/NAME.ron` overrides a built-in of the same name, and `--theme FILE`
//! loads any file). Themes are written in truecolor and adapted to what the terminal can show:
//! the nearest of the 256-colour palette, or of the 16 ANSI colours. With `NO_COLOR` set, every
//! colour is dropped and views fall back on bold, reverse, markers and an ASCII ramp.

use std::path::{Path, PathBuf};

use ratatui::style::{Color, Modifier, Style};
use serde::Deserialize;

use crate::error::{ConfigError, Error, Result, locate, locate_after};

/// A theme as written in its file: every field optional, so that a user's file names only what
/// it changes (as gitui's themes do). What it leaves out comes from its base: the built-in theme
/// named by `base`, else the built-in theme of the same name as the file (so that
/// `~/.config/vigil/themes/dark.ron` holding `(accent: "#ff8800")` changes dark's accent), else
/// `dark`. A field the theme does not know is refused, with its line and column.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ThemeFile {
    /// The built-in theme this one is laid over.
    base: Option<String>,
    name: Option<String>,
    foreground: Option<String>,
    background: Option<String>,
    muted: Option<String>,
    accent: Option<String>,
    border: Option<String>,
    selection: Option<String>,
    ok: Option<String>,
    warn: Option<String>,
    error: Option<String>,
    info: Option<String>,
    /// Colours of overlaid series, in order.
    series: Option<Vec<String>>,
    /// Heatmap ramp from low to high.
    heat: Option<Vec<String>>,
}

impl ThemeFile {
    /// Parses one layer. Implicit `Some` lets a file write `accent: "#fff"`, not `Some("#fff")`.
    fn parse(text: &str, origin: &Path) -> Result<Self> {
        ron::Options::default()
            .with_default_extension(ron::extensions::Extensions::IMPLICIT_SOME)
            .from_str(text)
            .map_err(|e| ConfigError::from_ron(&e, text, origin).into())
    }

    /// This layer over `base`: each field this one leaves out is the base's.
    fn over(self, base: ThemeFile) -> ThemeFile {
        ThemeFile {
            base: self.base,
            name: self.name.or(base.name),
            foreground: self.foreground.or(base.foreground),
            background: self.background.or(base.background),
            muted: self.muted.or(base.muted),
            accent: self.accent.or(base.accent),
            border: self.border.or(base.border),
            selection: self.selection.or(base.selection),
            ok: self.ok.or(base.ok),
            warn: self.warn.or(base.warn),
            error: self.error.or(base.error),
            info: self.info.or(base.info),
            series: self.series.or(base.series),
            heat: self.heat.or(base.heat),
        }
    }
}

/// The text of a built-in theme.
fn builtin_text(name: &str) -> Option<&'static str> {
    BUILTIN_THEMES.iter().find(|(n, _)| *n == name).map(|(_, text)| *text)
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
    /// Each series colour faded towards the background: the raw curve behind a smoothed one.
    pub faint: Vec<Color>,
    pub heat: Vec<Color>,
    /// The theme's colours in RGB before they were adapted to the terminal, for exported
    /// images (which are always truecolor).
    pub rgb: RgbColors,
}

/// A theme's colours as RGB triples (see [`Theme::rgb`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RgbColors {
    /// The canvas: the theme's background, or (for `reset`) dark or light after the foreground.
    pub background: (u8, u8, u8),
    pub foreground: (u8, u8, u8),
    pub muted: (u8, u8, u8),
    pub series: Vec<(u8, u8, u8)>,
    pub faint: Vec<(u8, u8, u8)>,
}

/// How much of a series colour a faint (raw) curve keeps; the rest is the background's.
const FAINT: f64 = 0.4;

/// The RGB value of a colour as a terminal usually shows it (the 16 ANSI colours at xterm's
/// defaults, the 256-colour cube and grey ramp); `None` for `reset`.
pub fn to_rgb(c: Color) -> Option<(u8, u8, u8)> {
    match c {
        Color::Rgb(r, g, b) => Some((r, g, b)),
        Color::Indexed(i) if i < 16 => Some(ANSI16[i as usize].1),
        Color::Indexed(i) if i < 232 => {
            const LEVELS: [u8; 6] = [0, 95, 135, 175, 215, 255];
            let i = i as usize - 16;
            Some((LEVELS[i / 36], LEVELS[(i / 6) % 6], LEVELS[i % 6]))
        }
        Color::Indexed(i) => {
            let g = 8 + 10 * (i - 232);
            Some((g, g, g))
        }
        Color::Reset => None,
        named => ANSI16.iter().find(|(n, _)| *n == named).map(|(_, rgb)| *rgb),
    }
}

fn mix(a: (u8, u8, u8), b: (u8, u8, u8), share_a: f64) -> (u8, u8, u8) {
    let m = |x: u8, y: u8| (x as f64 * share_a + y as f64 * (1.0 - share_a)).round() as u8;
    (m(a.0, b.0), m(a.1, b.1), m(a.2, b.2))
}

/// The built-in themes, embedded from `themes/`.
pub const BUILTIN_THEMES: &[(&str, &str)] = &[
    ("dark", include_str!("../../themes/dark.ron")),
    ("light", include_str!("../../themes/light.ron")),
    ("high-contrast", include_str!("../../themes/high-contrast.ron")),
    ("ansi16", include_str!("../../themes/ansi16.ron")),
];

impl Theme {
    /// Parses a user's theme file, lays it over its base (see [`ThemeFile`]) and adapts it to
    /// `depth`.
    pub fn parse(text: &str, origin: &Path, depth: ColorDepth) -> Result<Self> {
        let file = ThemeFile::parse(text, origin)?;
        let stem = origin.file_stem().and_then(|s| s.to_str()).unwrap_or("dark");
        let base_name = match &file.base {
            Some(b) => b.clone(),
            None => file.name.clone().unwrap_or_else(|| stem.to_string()),
        };
        let base_text = match builtin_text(&base_name) {
            Some(t) => t,
            None if file.base.is_some() => {
                let names: Vec<&str> = BUILTIN_THEMES.iter().map(|(n, _)| *n).collect();
                let msg = format!("no built-in theme named {base_name:?}; built in: {}", names.join(", "));
                return Err(ConfigError::at_field(text, origin, "base", msg).into());
            }
            None => builtin_text("dark").expect("dark is built in"),
        };
        let base = ThemeFile::parse(base_text, &Path::new("themes").join(format!("{base_name}.ron")))
            .expect("shipped themes parse (a test checks it)");
        // The theme is called what its file says, else after the file, never after its base.
        let name = file.name.clone().unwrap_or_else(|| stem.to_string());
        let merged = ThemeFile { name: Some(name), ..file.over(base) };
        Theme::resolve(merged, text, origin, depth)
    }

    /// A complete theme file adapted to `depth`; `text` is where a bad colour is looked up.
    fn resolve(f: ThemeFile, text: &str, origin: &Path, depth: ColorDepth) -> Result<Self> {
        let color = |field: &str, value: &str| -> Result<Color> {
            let c: Color = value.parse().map_err(|_| {
                let (line, col) = locate_after(text, field, &format!("\"{value}\""));
                ConfigError::at(
                    origin,
                    line,
                    col,
                    Some(field),
                    format!(
                        "field `{field}`: {value:?} is not a colour (use a name such as \"lightblue\", \
                         \"#rrggbb\", or a 256-colour index)"
                    ),
                )
            })?;
            Ok(adapt(c, depth))
        };
        let need = |field: &str, v: Option<String>| -> Result<String> {
            v.ok_or_else(|| {
                ConfigError::at(origin, 1, 1, Some(field), format!("missing field `{field}`")).into()
            })
        };
        let (series, heat) = (f.series.unwrap_or_default(), f.heat.unwrap_or_default());
        if series.len() < 4 || heat.len() < 3 {
            let field = if series.len() < 4 { "series" } else { "heat" };
            let (line, col) = locate(text, field);
            return Err(ConfigError::at(
                origin,
                line,
                col,
                Some(field),
                "a theme needs at least 4 `series` colours and 3 `heat` colours",
            )
            .into());
        }
        // The colours as written, before adapting, for faded curves and exported images.
        let raw = |value: &str| value.parse::<Color>().ok().and_then(to_rgb);
        let fg_raw = f.foreground.as_deref().and_then(raw).unwrap_or((212, 216, 232));
        let dark_canvas = 0.299 * fg_raw.0 as f64 + 0.587 * fg_raw.1 as f64 + 0.114 * fg_raw.2 as f64 > 128.0;
        let canvas = f.background.as_deref().and_then(raw).unwrap_or(if dark_canvas {
            (26, 27, 38)
        } else {
            (255, 255, 255)
        });
        let series_rgb: Vec<(u8, u8, u8)> = series.iter().map(|s| raw(s).unwrap_or(fg_raw)).collect();
        let faint_rgb: Vec<(u8, u8, u8)> = series_rgb.iter().map(|c| mix(*c, canvas, FAINT)).collect();
        let rgb = RgbColors {
            background: canvas,
            foreground: fg_raw,
            muted: f.muted.as_deref().and_then(raw).unwrap_or(fg_raw),
            series: series_rgb,
            faint: faint_rgb.clone(),
        };
        let series16 = distinct_16(&rgb.series);
        Ok(Theme {
            faint: faint_rgb
                .iter()
                .map(|&(r, g, b)| match depth {
                    // Sixteen colours have no faded shades: the grey between black and white.
                    ColorDepth::Ansi16 => Color::DarkGray,
                    _ => adapt(Color::Rgb(r, g, b), depth),
                })
                .collect(),
            rgb,
            name: need("name", f.name)?,
            depth,
            fg: color("foreground", &need("foreground", f.foreground)?)?,
            bg: color("background", &f.background.unwrap_or_else(|| "reset".into()))?,
            muted: color("muted", &need("muted", f.muted)?)?,
            accent: color("accent", &need("accent", f.accent)?)?,
            border: color("border", &need("border", f.border)?)?,
            selection: color("selection", &need("selection", f.selection)?)?,
            ok: color("ok", &need("ok", f.ok)?)?,
            warn: color("warn", &need("warn", f.warn)?)?,
            error: color("error", &need("error", f.error)?)?,
            info: color("info", &need("info", f.info)?)?,
            series: if depth == ColorDepth::Ansi16 {
                // Nearest colours would fold a truecolor palette onto a handful of the 16 (the
                // dark theme's twelve became six): each series takes the nearest one not yet
                // taken, so compared runs stay apart.
                for s in &series {
                    color("series", s)?;
                }
                series16
            } else {
                series.iter().map(|s| color("series", s)).collect::<Result<_>>()?
            },
            heat: heat.iter().map(|s| color("heat", s)).collect::<Result<_>>()?,
        })
    }

    /// A built-in theme by name.
    pub fn builtin(name: &str, depth: ColorDepth) -> Option<Self> {
        builtin_text(name).map(|text| {
            let origin = Path::new("themes").join(format!("{name}.ron"));
            let file = ThemeFile::parse(text, &origin).expect("shipped themes parse (a test checks it)");
            Theme::resolve(file, text, &origin, depth)
                .expect("shipped themes are complete (a test checks it)")
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
            Error::not_found(format!(
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
    /// Series `i`'s colour faded towards the background (a raw curve behind its smoothed one).
    pub fn faint(&self, i: usize) -> Color {
        self.faint[i % self.faint.len()]
    }
    /// An attribution's colour on a diverging scale, `t` in [-1, 1] (positive: for the class).
    /// Truecolor and 256 colours take `rgb`, the continuous scale; sixteen colours have too few
    /// shades for it (pale reds and blues all map to white and grey, and the map washes out),
    /// so they get a stepped scale of their own: red, light red, yellow for; blue, light blue,
    /// cyan against; the background near zero.
    pub fn diverging(&self, t: f32, rgb: (u8, u8, u8)) -> Color {
        match self.depth {
            ColorDepth::Ansi16 => {
                let a = t.abs();
                let step = if a < 0.1 {
                    return Color::Black;
                } else if a < 0.4 {
                    0
                } else if a < 0.7 {
                    1
                } else {
                    2
                };
                if t > 0.0 {
                    [Color::Red, Color::LightRed, Color::LightYellow][step]
                } else {
                    [Color::Blue, Color::LightBlue, Color::LightCyan][step]
                }
            }
            depth => adapt(Color::Rgb(rgb.0, rgb.1, rgb.2), depth),
        }
    }
    /// A generated token's style by its probability `p`, on [`PROBABILITY_STEPS`]: likely
    /// tokens in the theme's ok colour, then plain, warn and error as they get less likely.
    /// The semantic colours are already adapted to 16 colours. Without colour the cue is the
    /// type: plain from 0.4 up, dim below, underlined below 0.1.
    pub fn probability(&self, p: f32) -> Style {
        let step = PROBABILITY_STEPS.iter().position(|(lowest, _)| p >= *lowest).unwrap_or(3);
        if self.colored() {
            Style::default().fg([self.ok, self.fg, self.warn, self.error][step])
        } else {
            match step {
                0 | 1 => Style::default(),
                2 => Style::default().add_modifier(Modifier::DIM),
                _ => Style::default().add_modifier(Modifier::UNDERLINED),
            }
        }
    }
    /// A heatmap colour for a value in [0, 1].
    pub fn heat(&self, v: f64) -> Color {
        let n = self.heat.len();
        let i = ((v.clamp(0.0, 1.0) * (n - 1) as f64).round() as usize).min(n - 1);
        self.heat[i]
    }
}

/// The steps of the token-probability scale ([`Theme::probability`]), likely first: the lowest
/// probability of each step and its label in the legend.
pub const PROBABILITY_STEPS: [(f32, &str); 4] = [(0.8, "≥.8"), (0.4, ".4-.8"), (0.1, ".1-.4"), (0.0, "<.1")];

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

/// For each colour, the nearest of the 16 ANSI colours that an earlier one has not taken
/// (black, the usual background, never); once all are taken they repeat.
fn distinct_16(colors: &[(u8, u8, u8)]) -> Vec<Color> {
    let mut taken: Vec<Color> = Vec::new();
    colors
        .iter()
        .map(|&rgb| {
            let mut by_distance: Vec<&(Color, (u8, u8, u8))> =
                ANSI16.iter().filter(|(c, _)| *c != Color::Black).collect();
            by_distance.sort_by_key(|(_, c)| dist(*c, rgb));
            let pick = by_distance.iter().find(|(c, _)| !taken.contains(c)).unwrap_or(&by_distance[0]).0;
            if taken.len() >= by_distance.len() {
                taken.clear();
            }
            taken.push(pick);
            pick
        })
        .collect()
}

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
    fn sixteen_colours_keep_series_apart_and_attributions_readable() {
        for (name, _) in BUILTIN_THEMES {
            let t = Theme::builtin(name, ColorDepth::Ansi16).unwrap();
            let first: std::collections::BTreeSet<String> =
                t.series.iter().take(12).map(|c| format!("{c:?}")).collect();
            assert_eq!(first.len(), t.series.len().min(12), "{name}: {:?}", t.series);
            // The attribution scale: six steps, none of them white or grey (which wash out).
            let steps: Vec<Color> =
                [-0.9, -0.6, -0.3, 0.3, 0.6, 0.9].map(|v| t.diverging(v, (255, 255, 255))).to_vec();
            let distinct: std::collections::BTreeSet<String> =
                steps.iter().map(|c| format!("{c:?}")).collect();
            assert_eq!(distinct.len(), 6, "{steps:?}");
            assert!(steps.iter().all(|c| !matches!(c, Color::White | Color::Gray | Color::DarkGray)));
        }
        // Faint colours sit between the series colour and the background.
        let t = Theme::builtin("dark", ColorDepth::TrueColor).unwrap();
        assert_ne!(t.faint(0), t.series(0));
        assert_eq!(t.rgb.series[0], (0x7a, 0xa2, 0xf7));
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
        // A theme that names only itself was refused when themes were one layer; it is now dark.
        let t = Theme::parse("(name: \"x\")", Path::new("t.ron"), ColorDepth::TrueColor).unwrap();
        let dark = Theme::builtin("dark", ColorDepth::TrueColor).unwrap();
        assert_eq!(t, Theme { name: "x".into(), ..dark });
    }

    #[test]
    fn a_partial_theme_is_laid_over_its_base() {
        // Same name as a built-in: only the accent changes.
        let t =
            Theme::parse("(name: \"light\", accent: \"#ff0000\")", Path::new("t.ron"), ColorDepth::TrueColor)
                .unwrap();
        let light = Theme::builtin("light", ColorDepth::TrueColor).unwrap();
        assert_eq!(t.accent, Color::Rgb(255, 0, 0));
        assert_eq!(Theme { accent: light.accent, ..t.clone() }, light);
        // A new name with an explicit base; a new name without one is laid over dark.
        let t = Theme::parse(
            "(base: \"ansi16\", name: \"mine\", ok: \"green\")",
            Path::new("t.ron"),
            ColorDepth::TrueColor,
        )
        .unwrap();
        let ansi = Theme::builtin("ansi16", ColorDepth::TrueColor).unwrap();
        assert_eq!((t.name.as_str(), t.ok, t.fg, &t.series), ("mine", Color::Green, ansi.fg, &ansi.series));
        let t = Theme::parse("(muted: \"gray\")", Path::new("my-theme.ron"), ColorDepth::TrueColor).unwrap();
        let dark = Theme::builtin("dark", ColorDepth::TrueColor).unwrap();
        assert_eq!((t.name.as_str(), t.muted, t.accent), ("my-theme", Color::Gray, dark.accent));
        let err = Theme::parse("(base: \"nope\")", Path::new("t.ron"), ColorDepth::TrueColor)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("t.ron:1:2: field `base`") && err.contains("high-contrast"), "{err}");
    }

    #[test]
    fn a_misspelt_field_is_refused_with_its_place() {
        let err = Theme::parse(
            "(\n  name: \"x\",\n  acent: \"red\",\n)",
            Path::new("t.ron"),
            ColorDepth::TrueColor,
        )
        .unwrap_err();
        match &err {
            Error::Config(c) => {
                assert_eq!((c.line, c.field.as_deref()), (3, Some("acent")), "{err}");
                assert!(c.msg.contains("accent"), "the allowed fields are listed: {err}");
            }
            other => panic!("expected a config error, got {other:?}"),
        }
        assert!(err.to_string().starts_with("t.ron:3:"), "{err}");
        assert_eq!(err.exit_code(), 2);
    }
}
