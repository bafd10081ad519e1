//! [`Call`]: the call a phase handles, queried by the policy.
//!
//! In the gateway (`wasm32`), a `Call` is the host's `tollgate:policy/calls`
//! handle (0.2.0): each method asks the gateway for one value, and only
//! that value is copied into the policy's memory. Natively (unit tests), it
//! reads a [`CallContext`], a [`RequestHead`] and, for the response phase,
//! a [`ResponseHead`] the test made ([`Call::native`],
//! [`Call::native_response`]).
//!
//! Ask for what the policy needs, once per phase: every method is a call
//! into the gateway that copies its answer.

use crate::{CallContext, Consumer, Header, RequestHead, ResponseHead};

/// The call a phase handles: its context, the client's request (after the
/// edits of earlier steps; in the response phase, as it went upstream) and,
/// in the response phase, the response as it stands.
pub struct Call<'a> {
    src: Src<'a>,
}

enum Src<'a> {
    #[cfg(target_arch = "wasm32")]
    Host(&'a crate::bindings::tollgate::policy0_2_0::calls::Call),
    Native {
        ctx: &'a CallContext,
        req: &'a RequestHead,
        resp: Option<&'a ResponseHead>,
    },
}

fn first(headers: &[Header], name: &str) -> Option<Vec<u8>> {
    crate::header(headers, name).map(<[u8]>::to_vec)
}

impl<'a> Call<'a> {
    /// The gateway's handle (what [`crate::export_policy!`] passes).
    #[cfg(target_arch = "wasm32")]
    #[doc(hidden)]
    pub fn host(call: &'a crate::bindings::tollgate::policy0_2_0::calls::Call) -> Self {
        Call {
            src: Src::Host(call),
        }
    }

    /// A request-phase call over values a test made.
    pub fn native(ctx: &'a CallContext, req: &'a RequestHead) -> Self {
        Call {
            src: Src::Native {
                ctx,
                req,
                resp: None,
            },
        }
    }

    /// A response-phase call over values a test made.
    pub fn native_response(
        ctx: &'a CallContext,
        req: &'a RequestHead,
        resp: &'a ResponseHead,
    ) -> Self {
        Call {
            src: Src::Native {
                ctx,
                req,
                resp: Some(resp),
            },
        }
    }

    /// A unique id for this call, also sent upstream as `x-request-id`.
    pub fn request_id(&self) -> String {
        match &self.src {
            #[cfg(target_arch = "wasm32")]
            Src::Host(c) => c.request_id(),
            Src::Native { ctx, .. } => ctx.request_id.clone(),
        }
    }

    /// The client's IP address and port, e.g. `192.0.2.7:51234`.
    pub fn client_addr(&self) -> String {
        match &self.src {
            #[cfg(target_arch = "wasm32")]
            Src::Host(c) => c.client_addr(),
            Src::Native { ctx, .. } => ctx.client_addr.clone(),
        }
    }

    /// The API the call was routed to (its manifest name).
    pub fn api(&self) -> String {
        match &self.src {
            #[cfg(target_arch = "wasm32")]
            Src::Host(c) => c.api(),
            Src::Native { ctx, .. } => ctx.api.clone(),
        }
    }

    /// The route within the API (its manifest name or its pattern).
    pub fn route(&self) -> String {
        match &self.src {
            #[cfg(target_arch = "wasm32")]
            Src::Host(c) => c.route(),
            Src::Native { ctx, .. } => ctx.route.clone(),
        }
    }

    /// The name of this step in the chain.
    pub fn step(&self) -> String {
        match &self.src {
            #[cfg(target_arch = "wasm32")]
            Src::Host(c) => c.step(),
            Src::Native { ctx, .. } => ctx.step.clone(),
        }
    }

    /// The value the route's path template captured as `name`.
    pub fn capture(&self, name: &str) -> Option<String> {
        match &self.src {
            #[cfg(target_arch = "wasm32")]
            Src::Host(c) => c.capture(name),
            Src::Native { ctx, .. } => ctx
                .captures
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone()),
        }
    }

    /// Every capture of the route's path template, in template order.
    pub fn captures(&self) -> Vec<(String, String)> {
        match &self.src {
            #[cfg(target_arch = "wasm32")]
            Src::Host(c) => c.captures(),
            Src::Native { ctx, .. } => ctx.captures.clone(),
        }
    }

    /// The caller, once an authentication step has said so.
    pub fn consumer(&self) -> Option<Consumer> {
        match &self.src {
            #[cfg(target_arch = "wasm32")]
            Src::Host(c) => c.consumer(),
            Src::Native { ctx, .. } => ctx.consumer.clone(),
        }
    }

    /// `GET`, `POST`, ... as sent.
    pub fn method(&self) -> String {
        match &self.src {
            #[cfg(target_arch = "wasm32")]
            Src::Host(c) => c.method(),
            Src::Native { req, .. } => req.method.clone(),
        }
    }

    /// `http` or `https`: how the client reached the gateway.
    pub fn scheme(&self) -> String {
        match &self.src {
            #[cfg(target_arch = "wasm32")]
            Src::Host(c) => c.scheme(),
            Src::Native { req, .. } => req.scheme.clone(),
        }
    }

    /// The host (and port, if sent) the client addressed.
    pub fn authority(&self) -> String {
        match &self.src {
            #[cfg(target_arch = "wasm32")]
            Src::Host(c) => c.authority(),
            Src::Native { req, .. } => req.authority.clone(),
        }
    }

    /// The normalised path, starting with `/`, without the query.
    pub fn path(&self) -> String {
        match &self.src {
            #[cfg(target_arch = "wasm32")]
            Src::Host(c) => c.path(),
            Src::Native { req, .. } => req.path.clone(),
        }
    }

    /// The raw query string without `?`, if there was one.
    pub fn query(&self) -> Option<String> {
        match &self.src {
            #[cfg(target_arch = "wasm32")]
            Src::Host(c) => c.query(),
            Src::Native { req, .. } => req.query.clone(),
        }
    }

    /// The value of the first request field named `name` (ASCII
    /// case-insensitive).
    pub fn header(&self, name: &str) -> Option<Vec<u8>> {
        match &self.src {
            #[cfg(target_arch = "wasm32")]
            Src::Host(c) => c.header(name),
            Src::Native { req, .. } => first(&req.headers, name),
        }
    }

    /// The value of the first request field named `name`, if it is UTF-8.
    pub fn header_str(&self, name: &str) -> Option<String> {
        self.header(name).and_then(|v| String::from_utf8(v).ok())
    }

    /// The values of every request field named `name`, in order.
    pub fn header_values(&self, name: &str) -> Vec<Vec<u8>> {
        match &self.src {
            #[cfg(target_arch = "wasm32")]
            Src::Host(c) => c.header_values(name),
            Src::Native { req, .. } => crate::header_values(&req.headers, name)
                .map(<[u8]>::to_vec)
                .collect(),
        }
    }

    /// Every request field, in order.
    pub fn headers(&self) -> Vec<Header> {
        match &self.src {
            #[cfg(target_arch = "wasm32")]
            Src::Host(c) => c.headers(),
            Src::Native { req, .. } => req.headers.clone(),
        }
    }

    /// The whole request head (every field copied: prefer the methods
    /// above for what a policy reads).
    pub fn head(&self) -> RequestHead {
        match &self.src {
            #[cfg(target_arch = "wasm32")]
            Src::Host(_) => RequestHead {
                method: self.method(),
                scheme: self.scheme(),
                authority: self.authority(),
                path: self.path(),
                query: self.query(),
                headers: self.headers(),
            },
            Src::Native { req, .. } => (*req).clone(),
        }
    }

    /// The response status; `None` in the request phase.
    pub fn status(&self) -> Option<u16> {
        match &self.src {
            #[cfg(target_arch = "wasm32")]
            Src::Host(c) => c.status(),
            Src::Native { resp, .. } => resp.map(|r| r.status),
        }
    }

    /// The value of the first response field named `name`; `None` in the
    /// request phase.
    pub fn response_header(&self, name: &str) -> Option<Vec<u8>> {
        match &self.src {
            #[cfg(target_arch = "wasm32")]
            Src::Host(c) => c.response_header(name),
            Src::Native { resp, .. } => first(&resp.as_ref()?.headers, name),
        }
    }

    /// The values of every response field named `name`, in order; empty in
    /// the request phase.
    pub fn response_header_values(&self, name: &str) -> Vec<Vec<u8>> {
        match &self.src {
            #[cfg(target_arch = "wasm32")]
            Src::Host(c) => c.response_header_values(name),
            Src::Native { resp, .. } => resp
                .map(|r| {
                    crate::header_values(&r.headers, name)
                        .map(<[u8]>::to_vec)
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// Every response field, in order; empty in the request phase.
    pub fn response_headers(&self) -> Vec<Header> {
        match &self.src {
            #[cfg(target_arch = "wasm32")]
            Src::Host(c) => c.response_headers(),
            Src::Native { resp, .. } => resp.map(|r| r.headers.clone()).unwrap_or_default(),
        }
    }
}
