//! Unit tests of what the runner cannot see: the report-only log lines.

use std::cell::RefCell;

thread_local! {
    /// Lines `report` logged on this thread.
    pub static LOGGED: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}
