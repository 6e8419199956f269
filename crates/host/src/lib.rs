//! `raworc host`: the supervisor inside each computer, and the control
//! plane's client for it.
//!
//! Inside the computer, [`run`] brings the desktop up (display, window
//! manager and panel, browser, VNC server; the session's instructions,
//! secrets and setup script) and serves tool calls on a unix socket in the
//! computer's run directory, which the runtime binds from the host: command
//! execution, files, screenshots and every computer-tool action, straight
//! over the X protocol, and the bash and text editor tools of a
//! computer-use agent. [`client::HostClient`] is the other end.

pub mod bash;
pub mod client;
pub mod computer;
mod desktop;
pub mod editor;
pub mod exec;
pub mod files;
mod init;
pub mod keys;
mod painted;
pub mod proto;
pub mod screen;
mod server;
pub mod settle;
mod supervisor;

pub use supervisor::run;
