//! The computer tool: every action of Anthropic's `computer_20250124` and
//! `computer_20251124` (input exactly as the model sends it), validated
//! against the display and carried out on the [`Screen`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;

use crate::keys::{parse_chords, Chord};
use crate::proto::{ComputerResult, DisplaySize};
use crate::screen::{Button, Rect, Screen, ScreenError};
use crate::settle::{Settle, QUIET};

/// Longest `duration` accepted for `wait` and `hold_key`, in seconds.
const MAX_DURATION_S: f64 = 100.0;
/// Most wheel clicks in one `scroll`.
const MAX_SCROLL: u64 = 100;
/// Longest `type` text.
const MAX_TYPE_CHARS: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// Not a usable action at all: unknown name, missing or mistyped field (422).
    #[error("{0}")]
    Invalid(String),
    /// Well-formed, but outside the display (400).
    #[error("{0}")]
    OutOfRange(String),
    #[error("{0}")]
    Screen(#[from] ScreenError),
}

type Point = (u16, u16);

/// The coordinate space the model works in when it is told of a smaller
/// screen than the real one (Anthropic's tools do best at about XGA):
/// its coordinates are scaled up to the screen, screenshots down to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    pub model: DisplaySize,
    pub screen: DisplaySize,
}

impl Space {
    fn scale(v: u16, from: u16, to: u16) -> u16 {
        let scaled = (v as f64 * to as f64 / from.max(1) as f64).round() as u16;
        scaled.min(to.saturating_sub(1))
    }

    /// A model point on the screen.
    pub fn to_screen(&self, (x, y): Point) -> Point {
        (
            Self::scale(x, self.model.width, self.screen.width),
            Self::scale(y, self.model.height, self.screen.height),
        )
    }

    /// The exclusive end corner of a model region on the screen (which may
    /// be the screen's own edge).
    pub fn end_on_screen(&self, (x, y): Point) -> Point {
        let end = |v: u16, from: u16, to: u16| {
            ((v as f64 * to as f64 / from.max(1) as f64).round() as u16).min(to)
        };
        (
            end(x, self.model.width, self.screen.width),
            end(y, self.model.height, self.screen.height),
        )
    }

    /// A screen point as the model sees it.
    pub fn to_model(&self, (x, y): Point) -> Point {
        (
            Self::scale(x, self.screen.width, self.model.width),
            Self::scale(y, self.screen.height, self.model.height),
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Screenshot,
    Zoom(Rect),
    CursorPosition,
    MouseMove(Point),
    Click {
        button: Button,
        times: u32,
        at: Option<Point>,
        modifiers: Vec<Chord>,
    },
    MouseDown(Option<Point>),
    MouseUp(Option<Point>),
    Drag {
        from: Point,
        to: Point,
    },
    Scroll {
        button: Button,
        amount: u32,
        at: Option<Point>,
        modifiers: Vec<Chord>,
    },
    Key(Vec<Chord>),
    HoldKey(Vec<Chord>, Duration),
    Type(String),
    Wait(Duration),
}

fn invalid(msg: impl Into<String>) -> ActionError {
    ActionError::Invalid(msg.into())
}

struct Input<'a> {
    action: &'a str,
    obj: &'a serde_json::Map<String, Value>,
    size: DisplaySize,
}

impl Input<'_> {
    fn point(&self, field: &str) -> Result<Option<Point>, ActionError> {
        let Some(v) = self.obj.get(field).filter(|v| !v.is_null()) else {
            return Ok(None);
        };
        let pair = v
            .as_array()
            .filter(|a| a.len() == 2)
            .ok_or_else(|| invalid(format!("{field} must be a pair [x, y]")))?;
        let mut xy = [0u16; 2];
        for (i, c) in pair.iter().enumerate() {
            let n = c
                .as_i64()
                .or_else(|| c.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
                .ok_or_else(|| invalid(format!("{field} must hold integers")))?;
            let limit = if i == 0 {
                self.size.width
            } else {
                self.size.height
            };
            if n < 0 || n >= limit as i64 {
                return Err(ActionError::OutOfRange(format!(
                    "{field} {v} is outside the {}x{} display",
                    self.size.width, self.size.height
                )));
            }
            xy[i] = n as u16;
        }
        Ok(Some((xy[0], xy[1])))
    }

    fn required_point(&self, field: &str) -> Result<Point, ActionError> {
        self.point(field)?
            .ok_or_else(|| invalid(format!("{field} is required for {}", self.action)))
    }

    fn text(&self) -> Result<Option<&str>, ActionError> {
        match self.obj.get("text") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(invalid("text must be a string")),
        }
    }

    fn required_text(&self) -> Result<&str, ActionError> {
        self.text()?
            .filter(|t| !t.is_empty())
            .ok_or_else(|| invalid(format!("text is required for {}", self.action)))
    }

    fn chords(&self, text: &str) -> Result<Vec<Chord>, ActionError> {
        parse_chords(text).map_err(|e| invalid(e.to_string()))
    }

    /// Modifier keys to hold during a click or scroll (`text`).
    fn modifiers(&self) -> Result<Vec<Chord>, ActionError> {
        match self.text()? {
            Some(t) if !t.trim().is_empty() => self.chords(t),
            _ => Ok(Vec::new()),
        }
    }

    fn duration(&self) -> Result<Duration, ActionError> {
        let d = self
            .obj
            .get("duration")
            .and_then(Value::as_f64)
            .ok_or_else(|| {
                invalid(format!(
                    "duration (seconds) is required for {}",
                    self.action
                ))
            })?;
        if !(0.0..=MAX_DURATION_S).contains(&d) {
            return Err(invalid(format!(
                "duration must be between 0 and {MAX_DURATION_S} seconds"
            )));
        }
        Ok(Duration::from_secs_f64(d))
    }

    fn no_coordinate(&self) -> Result<(), ActionError> {
        if self.obj.get("coordinate").is_some_and(|v| !v.is_null()) {
            return Err(invalid(format!(
                "coordinate is not accepted for {}",
                self.action
            )));
        }
        Ok(())
    }
}

impl Action {
    /// Parses an input in the model's coordinates of `space` and maps its
    /// points onto the screen.
    pub fn parse_in(input: &Value, space: Space) -> Result<Action, ActionError> {
        let on = |p: Point| space.to_screen(p);
        let on_opt = |p: Option<Point>| p.map(on);
        Ok(match Action::parse(input, space.model)? {
            Action::MouseMove(p) => Action::MouseMove(on(p)),
            Action::Click {
                button,
                times,
                at,
                modifiers,
            } => Action::Click {
                button,
                times,
                at: on_opt(at),
                modifiers,
            },
            Action::MouseDown(p) => Action::MouseDown(on_opt(p)),
            Action::MouseUp(p) => Action::MouseUp(on_opt(p)),
            Action::Drag { from, to } => Action::Drag {
                from: on(from),
                to: on(to),
            },
            Action::Scroll {
                button,
                amount,
                at,
                modifiers,
            } => Action::Scroll {
                button,
                amount,
                at: on_opt(at),
                modifiers,
            },
            Action::Zoom(r) => {
                let (x0, y0) = on((r.x, r.y));
                // The end corner is exclusive: it may be the screen's edge.
                let (x1, y1) = space.end_on_screen((r.x + r.width, r.y + r.height));
                let (x1, y1) = (x1.max(x0 + 1), y1.max(y0 + 1));
                Action::Zoom(Rect {
                    x: x0,
                    y: y0,
                    width: x1 - x0,
                    height: y1 - y0,
                })
            }
            other => other,
        })
    }

    /// Parses a computer-tool input for a display of `size`.
    pub fn parse(input: &Value, size: DisplaySize) -> Result<Action, ActionError> {
        let obj = input
            .as_object()
            .ok_or_else(|| invalid("the input must be a JSON object"))?;
        let action = obj
            .get("action")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("action (a string) is required"))?;
        let i = Input { action, obj, size };
        let click = |button, times| -> Result<Action, ActionError> {
            Ok(Action::Click {
                button,
                times,
                at: i.point("coordinate")?,
                modifiers: i.modifiers()?,
            })
        };
        Ok(match action {
            "screenshot" => Action::Screenshot,
            "cursor_position" => Action::CursorPosition,
            "mouse_move" => Action::MouseMove(i.required_point("coordinate")?),
            "left_click" => click(Button::Left, 1)?,
            "right_click" => click(Button::Right, 1)?,
            "middle_click" => click(Button::Middle, 1)?,
            "double_click" => click(Button::Left, 2)?,
            "triple_click" => click(Button::Left, 3)?,
            "left_mouse_down" => Action::MouseDown(i.point("coordinate")?),
            "left_mouse_up" => Action::MouseUp(i.point("coordinate")?),
            "left_click_drag" => Action::Drag {
                from: i.required_point("start_coordinate")?,
                to: i.required_point("coordinate")?,
            },
            "scroll" => {
                let button = match obj.get("scroll_direction").and_then(Value::as_str) {
                    Some("up") => Button::WheelUp,
                    Some("down") => Button::WheelDown,
                    Some("left") => Button::WheelLeft,
                    Some("right") => Button::WheelRight,
                    _ => {
                        return Err(invalid(
                            "scroll_direction must be 'up', 'down', 'left' or 'right'",
                        ))
                    }
                };
                let amount = match obj.get("scroll_amount") {
                    None | Some(Value::Null) => 3,
                    Some(v) => v.as_u64().filter(|n| *n <= MAX_SCROLL).ok_or_else(|| {
                        invalid(format!(
                            "scroll_amount must be an integer from 0 to {MAX_SCROLL}"
                        ))
                    })?,
                };
                Action::Scroll {
                    button,
                    amount: amount as u32,
                    at: i.point("coordinate")?,
                    modifiers: i.modifiers()?,
                }
            }
            "key" => {
                i.no_coordinate()?;
                Action::Key(i.chords(i.required_text()?)?)
            }
            "hold_key" => Action::HoldKey(i.chords(i.required_text()?)?, i.duration()?),
            "type" => {
                i.no_coordinate()?;
                let text = i.required_text()?;
                if text.chars().count() > MAX_TYPE_CHARS {
                    return Err(invalid(format!(
                        "text is longer than {MAX_TYPE_CHARS} characters"
                    )));
                }
                Action::Type(text.to_owned())
            }
            "wait" => Action::Wait(i.duration()?),
            "zoom" => {
                let region = obj
                    .get("region")
                    .and_then(Value::as_array)
                    .filter(|a| a.len() == 4)
                    .ok_or_else(|| invalid("region must be [x0, y0, x1, y1]"))?;
                let n: Vec<i64> = region
                    .iter()
                    .map(|v| {
                        v.as_i64()
                            .ok_or_else(|| invalid("region must hold integers"))
                    })
                    .collect::<Result<_, _>>()?;
                let (w, h) = (size.width as i64, size.height as i64);
                if n.iter().any(|c| *c < 0) || n[2] > w || n[3] > h || n[0] >= n[2] || n[1] >= n[3]
                {
                    return Err(ActionError::OutOfRange(format!(
                        "region {:?} is not a rectangle on the {w}x{h} display",
                        n
                    )));
                }
                Action::Zoom(Rect {
                    x: n[0] as u16,
                    y: n[1] as u16,
                    width: (n[2] - n[0]) as u16,
                    height: (n[3] - n[1]) as u16,
                })
            }
            other => return Err(invalid(format!("unknown action {other:?}"))),
        })
    }
}

fn png_result(png: Vec<u8>) -> ComputerResult {
    ComputerResult {
        output: None,
        image: Some(base64::engine::general_purpose::STANDARD.encode(png)),
    }
}

fn done(text: impl Into<String>) -> ComputerResult {
    ComputerResult {
        output: Some(text.into()),
        image: None,
    }
}

/// The display, shared by the request handlers; X calls block, so they run
/// on the blocking pool one at a time.
#[derive(Clone)]
pub struct Computer {
    screen: Arc<Mutex<Screen>>,
    size: DisplaySize,
    /// The change watcher, connected on first use.
    settle: Arc<Mutex<Option<Settle>>>,
}

impl Computer {
    pub fn new(screen: Screen) -> Computer {
        let size = screen.size();
        Computer {
            screen: Arc::new(Mutex::new(screen)),
            size,
            settle: Arc::default(),
        }
    }

    pub fn size(&self) -> DisplaySize {
        self.size
    }

    /// Runs `f` on the screen in the blocking pool.
    pub async fn with_screen<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Screen) -> Result<T, ScreenError> + Send + 'static,
    ) -> Result<T, ScreenError> {
        let screen = self.screen.clone();
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock leaves the X connection usable.
            let mut guard = screen.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .await
        .unwrap_or_else(|e| Err(ScreenError::Worker(e.to_string())))
    }

    pub async fn screenshot_png(&self) -> Result<Vec<u8>, ScreenError> {
        self.with_screen(|s| {
            let full = s.full();
            s.png(full)
        })
        .await
    }

    /// A screenshot taken once the screen has settled (no change for
    /// [`QUIET`]) or `cap` has passed; also how long that took.
    pub async fn settled_screenshot(
        &self,
        cap: Duration,
        space: Option<Space>,
    ) -> Result<(Vec<u8>, Duration), ScreenError> {
        let settle = self.settle.clone();
        let waited = tokio::task::spawn_blocking(move || {
            let mut guard = settle.lock().unwrap_or_else(|p| p.into_inner());
            if guard.is_none() {
                *guard = Some(Settle::connect(crate::desktop::DISPLAY)?);
            }
            let waited = match guard.as_ref() {
                Some(s) => s.wait(QUIET, cap),
                None => Ok(Duration::ZERO),
            };
            // A broken watcher is connected afresh next time.
            if waited.is_err() {
                *guard = None;
            }
            waited
        })
        .await
        .unwrap_or_else(|e| Err(ScreenError::Worker(e.to_string())))?;
        Ok((self.screenshot_in(space).await?, waited))
    }

    /// The screen as the computer tool shows it: with the pointer drawn
    /// in, as a PNG in the model's space (the screen's own size when there
    /// is none).
    pub async fn screenshot_in(&self, space: Option<Space>) -> Result<Vec<u8>, ScreenError> {
        let size = space.map_or(self.size, |sp| sp.model);
        self.with_screen(move |s| s.png_sized(size, true)).await
    }

    /// Carries out one action whose points are already on the screen; its
    /// screenshots and pointer position are in `space` when there is one.
    pub async fn run_in(
        &self,
        action: Action,
        space: Option<Space>,
    ) -> Result<ComputerResult, ActionError> {
        match action {
            Action::Screenshot => Ok(png_result(self.screenshot_in(space).await?)),
            Action::Wait(duration) => {
                tokio::time::sleep(duration).await;
                Ok(png_result(self.screenshot_in(space).await?))
            }
            Action::CursorPosition => {
                let (x, y) = self.with_screen(|s| s.pointer()).await?;
                let (x, y) = (x.max(0) as u16, y.max(0) as u16);
                let (x, y) = space.map_or((x, y), |sp| sp.to_model((x, y)));
                Ok(done(format!("X={x},Y={y}")))
            }
            other => self.run(other).await,
        }
    }

    /// Carries out one action.
    pub async fn run(&self, action: Action) -> Result<ComputerResult, ActionError> {
        let result = match action {
            Action::Screenshot => png_result(self.screenshot_png().await?),
            Action::Zoom(rect) => png_result(
                self.with_screen(move |s| {
                    let mut rgb = s.capture(rect)?;
                    s.draw_pointer(&mut rgb, rect)?;
                    crate::screen::encode_png(&rgb, rect.width, rect.height)
                })
                .await?,
            ),
            Action::CursorPosition => {
                let (x, y) = self.with_screen(|s| s.pointer()).await?;
                done(format!("X={x},Y={y}"))
            }
            Action::MouseMove((x, y)) => {
                self.with_screen(move |s| s.move_to(x, y)).await?;
                done(format!("moved the mouse to ({x}, {y})"))
            }
            Action::Click {
                button,
                times,
                at,
                modifiers,
            } => {
                self.with_screen(move |s| {
                    move_if(s, at)?;
                    with_held(s, &modifiers, |s| s.click(button, times))
                })
                .await?;
                done(match at {
                    Some((x, y)) => format!("clicked at ({x}, {y})"),
                    None => "clicked".to_owned(),
                })
            }
            Action::MouseDown(at) | Action::MouseUp(at) => {
                let down = matches!(action, Action::MouseDown(_));
                self.with_screen(move |s| {
                    move_if(s, at)?;
                    s.button(Button::Left, down)
                })
                .await?;
                done(if down {
                    "left button down"
                } else {
                    "left button up"
                })
            }
            Action::Drag { from, to } => {
                self.with_screen(move |s| {
                    s.move_to(from.0, from.1)?;
                    s.button(Button::Left, true)?;
                    // A step on the way, so toolkits see a drag start.
                    s.move_to(from.0 / 2 + to.0 / 2, from.1 / 2 + to.1 / 2)?;
                    s.move_to(to.0, to.1)?;
                    s.button(Button::Left, false)
                })
                .await?;
                done(format!(
                    "dragged from ({}, {}) to ({}, {})",
                    from.0, from.1, to.0, to.1
                ))
            }
            Action::Scroll {
                button,
                amount,
                at,
                modifiers,
            } => {
                self.with_screen(move |s| {
                    move_if(s, at)?;
                    with_held(s, &modifiers, |s| s.click(button, amount))
                })
                .await?;
                done(format!("scrolled {amount}"))
            }
            Action::Key(chords) => {
                let n = chords.len();
                self.with_screen(move |s| {
                    for chord in &chords {
                        s.chord_down(chord)?;
                        s.chord_up(chord)?;
                    }
                    Ok(())
                })
                .await?;
                done(format!("pressed {n} key chord(s)"))
            }
            Action::HoldKey(chords, duration) => {
                let held = chords.clone();
                self.with_screen(move |s| held.iter().try_for_each(|c| s.chord_down(c)))
                    .await?;
                tokio::time::sleep(duration).await;
                self.with_screen(move |s| chords.iter().rev().try_for_each(|c| s.chord_up(c)))
                    .await?;
                done(format!("held for {:.1} s", duration.as_secs_f64()))
            }
            Action::Type(text) => {
                let n = text.chars().count();
                self.with_screen(move |s| s.type_text(&text)).await?;
                done(format!("typed {n} character(s)"))
            }
            Action::Wait(duration) => {
                tokio::time::sleep(duration).await;
                png_result(self.screenshot_png().await?)
            }
        };
        Ok(result)
    }
}

/// Moves the pointer to `at`, when the action names a place.
fn move_if(s: &Screen, at: Option<Point>) -> Result<(), ScreenError> {
    match at {
        Some((x, y)) => s.move_to(x, y),
        None => Ok(()),
    }
}

/// Holds `modifiers` down while `f` runs, and releases them even if it fails.
fn with_held(
    s: &mut Screen,
    modifiers: &[Chord],
    f: impl FnOnce(&mut Screen) -> Result<(), ScreenError>,
) -> Result<(), ScreenError> {
    for chord in modifiers {
        s.chord_down(chord)?;
    }
    let result = f(s);
    for chord in modifiers.iter().rev() {
        s.chord_up(chord)?;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const XGA: DisplaySize = DisplaySize {
        width: 1024,
        height: 768,
    };

    fn parse(v: Value) -> Result<Action, ActionError> {
        Action::parse(&v, XGA)
    }

    #[test]
    fn clicks_take_an_optional_coordinate_and_modifiers() {
        assert_eq!(
            parse(json!({"action":"left_click","coordinate":[10,20]})).unwrap(),
            Action::Click {
                button: Button::Left,
                times: 1,
                at: Some((10, 20)),
                modifiers: vec![]
            }
        );
        assert_eq!(
            parse(json!({"action":"triple_click","text":"shift"})).unwrap(),
            Action::Click {
                button: Button::Left,
                times: 3,
                at: None,
                modifiers: vec![vec![0xffe1]]
            }
        );
    }

    #[test]
    fn coordinates_outside_the_display_are_out_of_range() {
        for c in [json!([1024, 0]), json!([0, 768]), json!([-1, 5])] {
            let err = parse(json!({"action":"mouse_move","coordinate":c})).unwrap_err();
            assert!(matches!(err, ActionError::OutOfRange(_)), "{c}: {err}");
        }
        assert!(parse(json!({"action":"mouse_move","coordinate":[1023,767]})).is_ok());
        let err = parse(json!({"action":"zoom","region":[0,0,1025,10]})).unwrap_err();
        assert!(matches!(err, ActionError::OutOfRange(_)));
        let err = parse(json!({"action":"zoom","region":[10,10,10,20]})).unwrap_err();
        assert!(matches!(err, ActionError::OutOfRange(_)));
    }

    #[test]
    fn malformed_inputs_are_invalid_with_a_reason() {
        for (input, says) in [
            (json!({"action":"fly"}), "unknown action"),
            (json!({"coordinate":[1,2]}), "action"),
            (json!("screenshot"), "object"),
            (json!({"action":"mouse_move"}), "coordinate is required"),
            (json!({"action":"key"}), "text is required"),
            (json!({"action":"key","text":"ctrl+Nope"}), "unknown key"),
            (
                json!({"action":"left_click_drag","coordinate":[1,2]}),
                "start_coordinate",
            ),
            (
                json!({"action":"scroll","scroll_direction":"sideways"}),
                "scroll_direction",
            ),
            (json!({"action":"wait","duration":-1}), "duration"),
            (
                json!({"action":"hold_key","text":"a","duration":1000}),
                "duration",
            ),
            (
                json!({"action":"type","text":"x","coordinate":[1,1]}),
                "not accepted",
            ),
            (json!({"action":"left_click","coordinate":[1]}), "pair"),
        ] {
            let err = parse(input.clone()).unwrap_err();
            assert!(matches!(err, ActionError::Invalid(_)), "{input}: {err}");
            assert!(err.to_string().contains(says), "{input}: {err}");
        }
    }

    #[test]
    fn a_smaller_model_space_maps_onto_the_screen() {
        let space = Space {
            model: DisplaySize {
                width: 1280,
                height: 800,
            },
            screen: DisplaySize {
                width: 1920,
                height: 1200,
            },
        };
        let a = Action::parse_in(
            &json!({"action":"left_click","coordinate":[640,400]}),
            space,
        );
        assert!(matches!(
            a,
            Ok(Action::Click {
                at: Some((960, 600)),
                ..
            })
        ));
        let a = Action::parse_in(
            &json!({"action":"mouse_move","coordinate":[1279,799]}),
            space,
        );
        assert_eq!(a.unwrap(), Action::MouseMove((1919, 1199)));
        // Bounds are the model's.
        let err = Action::parse_in(&json!({"action":"mouse_move","coordinate":[1280,0]}), space);
        assert!(matches!(err, Err(ActionError::OutOfRange(_))));
        assert_eq!(space.to_model((960, 600)), (640, 400));
        // A zoom on the whole model screen is the whole real screen.
        let zoom = Action::parse_in(&json!({"action":"zoom","region":[0,0,1280,800]}), space);
        assert_eq!(
            zoom.unwrap(),
            Action::Zoom(Rect {
                x: 0,
                y: 0,
                width: 1920,
                height: 1200
            })
        );
    }

    #[test]
    fn every_documented_action_parses() {
        for input in [
            json!({"action":"screenshot"}),
            json!({"action":"cursor_position"}),
            json!({"action":"right_click","coordinate":[5,5]}),
            json!({"action":"middle_click"}),
            json!({"action":"double_click","coordinate":[5,5]}),
            json!({"action":"left_mouse_down"}),
            json!({"action":"left_mouse_up","coordinate":[3,3]}),
            json!({"action":"left_click_drag","start_coordinate":[1,1],"coordinate":[9,9]}),
            json!({"action":"scroll","scroll_direction":"down","scroll_amount":5,"coordinate":[5,5]}),
            json!({"action":"key","text":"ctrl+a Delete"}),
            json!({"action":"hold_key","text":"shift","duration":0.1}),
            json!({"action":"type","text":"héllo\n"}),
            json!({"action":"wait","duration":0}),
            json!({"action":"zoom","region":[0,0,512,384]}),
        ] {
            assert!(parse(input.clone()).is_ok(), "{input}");
        }
    }
}
