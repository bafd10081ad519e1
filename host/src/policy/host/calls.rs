//! `tollgate:policy/calls` (0.2.0): the call a phase handles, as a
//! resource the step queries. The phase's context, request head and
//! response head are moved into the store for the length of the call
//! ([`CallData`], swapped in and out, never copied) and each method copies
//! out only what the step asks for.
//!
//! The guest holds only a borrowed handle, valid during the export call
//! (the canonical ABI refuses a borrow that outlives it), so every handle
//! names the one call of its store: its representation is not looked at.

use crate::policy::bindings::calls::{Host, HostCall};
use crate::policy::{CallContext, CallRep, Consumer, Header, RequestHead, ResponseHead, StepState};
use wasmtime::component::Resource;

/// What a phase's call handle reads.
pub struct CallData {
    pub ctx: CallContext,
    pub head: RequestHead,
    /// The response as it stands (response phase only).
    pub resp: Option<ResponseHead>,
}

impl Default for CallData {
    fn default() -> Self {
        CallData {
            ctx: CallContext {
                request_id: String::new(),
                client_addr: String::new(),
                api: String::new(),
                route: String::new(),
                captures: Vec::new(),
                consumer: None,
                step: String::new(),
            },
            head: RequestHead {
                method: String::new(),
                scheme: String::new(),
                authority: String::new(),
                path: String::new(),
                query: None,
                headers: Vec::new(),
            },
            resp: None,
        }
    }
}

fn first(headers: &[Header], name: &str) -> Option<Vec<u8>> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value.clone())
}

fn every(headers: &[Header], name: &str) -> Vec<Vec<u8>> {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value.clone())
        .collect()
}

impl Host for StepState {}

impl HostCall for StepState {
    fn request_id(&mut self, _: Resource<CallRep>) -> String {
        self.call.ctx.request_id.clone()
    }

    fn client_addr(&mut self, _: Resource<CallRep>) -> String {
        self.call.ctx.client_addr.clone()
    }

    fn api(&mut self, _: Resource<CallRep>) -> String {
        self.call.ctx.api.clone()
    }

    fn route(&mut self, _: Resource<CallRep>) -> String {
        self.call.ctx.route.clone()
    }

    fn step(&mut self, _: Resource<CallRep>) -> String {
        self.call.ctx.step.clone()
    }

    fn capture(&mut self, _: Resource<CallRep>, name: String) -> Option<String> {
        self.call
            .ctx
            .captures
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
    }

    fn captures(&mut self, _: Resource<CallRep>) -> Vec<(String, String)> {
        self.call.ctx.captures.clone()
    }

    fn consumer(&mut self, _: Resource<CallRep>) -> Option<Consumer> {
        self.call.ctx.consumer.clone()
    }

    fn method(&mut self, _: Resource<CallRep>) -> String {
        self.call.head.method.clone()
    }

    fn scheme(&mut self, _: Resource<CallRep>) -> String {
        self.call.head.scheme.clone()
    }

    fn authority(&mut self, _: Resource<CallRep>) -> String {
        self.call.head.authority.clone()
    }

    fn path(&mut self, _: Resource<CallRep>) -> String {
        self.call.head.path.clone()
    }

    fn query(&mut self, _: Resource<CallRep>) -> Option<String> {
        self.call.head.query.clone()
    }

    fn header(&mut self, _: Resource<CallRep>, name: String) -> Option<Vec<u8>> {
        first(&self.call.head.headers, &name)
    }

    fn header_values(&mut self, _: Resource<CallRep>, name: String) -> Vec<Vec<u8>> {
        every(&self.call.head.headers, &name)
    }

    fn headers(&mut self, _: Resource<CallRep>) -> Vec<Header> {
        self.call.head.headers.clone()
    }

    fn status(&mut self, _: Resource<CallRep>) -> Option<u16> {
        self.call.resp.as_ref().map(|r| r.status)
    }

    fn response_header(&mut self, _: Resource<CallRep>, name: String) -> Option<Vec<u8>> {
        first(&self.call.resp.as_ref()?.headers, &name)
    }

    fn response_header_values(&mut self, _: Resource<CallRep>, name: String) -> Vec<Vec<u8>> {
        self.call
            .resp
            .as_ref()
            .map(|r| every(&r.headers, &name))
            .unwrap_or_default()
    }

    fn response_headers(&mut self, _: Resource<CallRep>) -> Vec<Header> {
        self.call
            .resp
            .as_ref()
            .map(|r| r.headers.clone())
            .unwrap_or_default()
    }

    fn drop(&mut self, _: Resource<CallRep>) -> wasmtime::Result<()> {
        // Only ever lent: nothing to free.
        Ok(())
    }
}
