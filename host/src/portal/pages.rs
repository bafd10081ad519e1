//! The portal's pages: minijinja templates embedded in the binary, every
//! `.html` one auto-escaped (a name, a description or an email typed by
//! anyone is text, never markup), and the one stylesheet.

use minijinja::Environment;
use serde::Serialize;

/// RapiDoc (MIT; pinned and fetched by scripts/vendor-ui, embedded by
/// host/build.rs), served at `/static/rapidoc-min.js` for the API
/// reference pages.
pub const RAPIDOC: &str = include_str!(env!("TOLLGATE_RAPIDOC"));

/// The stylesheet served at `/static/portal.css`.
pub const CSS: &str = include_str!("templates/portal.css");

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("home.html", include_str!("templates/home.html")),
    ("signin.html", include_str!("templates/signin.html")),
    ("signup.html", include_str!("templates/signup.html")),
    (
        "reset_request.html",
        include_str!("templates/reset_request.html"),
    ),
    ("reset.html", include_str!("templates/reset.html")),
    ("message.html", include_str!("templates/message.html")),
    ("apps.html", include_str!("templates/apps.html")),
    ("app.html", include_str!("templates/app.html")),
    ("reference.html", include_str!("templates/reference.html")),
    ("usage.html", include_str!("templates/usage.html")),
];

/// The templates, parsed once.
pub struct Pages {
    env: Environment<'static>,
}

impl Pages {
    pub fn new() -> Pages {
        let mut env = Environment::new();
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
        for (name, text) in TEMPLATES {
            env.add_template(name, text)
                .unwrap_or_else(|e| panic!("portal template {name}: {e}"));
        }
        Pages { env }
    }

    /// Render `name` with `ctx`.
    pub fn render<S: Serialize>(&self, name: &str, ctx: S) -> Result<String, String> {
        self.env
            .get_template(name)
            .and_then(|t| t.render(ctx))
            .map_err(|e| format!("rendering {name}: {e:#}"))
    }
}

impl Default for Pages {
    fn default() -> Self {
        Pages::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_renders_and_escapes() {
        let p = Pages::new();
        let evil = "<script>alert(1)</script>\"' onmouseover=x";
        for (name, _) in TEMPLATES {
            let html = p
                .render(
                    name,
                    minijinja::context! { title => evil, error => evil, csrf => "t", account => minijinja::context!{ name => evil } },
                )
                .unwrap();
            assert!(!html.contains("<script>"), "{name}");
            assert!(!html.contains("\"' onmouseover"), "{name}");
        }
    }
}
