/*
 * trio_sse client.js — a small browser helper for trio_sse streams.
 * Served by trio_sse at GET /sse/client.js. No dependencies, no build step.
 *
 *   const sse = TrioSSE.connect("/sse/events", {types: ["commit"], project: "p1", tags: {env: ["prod"]}, rewind: 20});
 *   sse.on("commit", (data, event) => console.log(event.id, data));
 *   await sse.subscribe(["commit", "risk_alert"]);   // changes THIS stream's filters
 *   sse.close();
 *
 * Why it looks like this:
 * - It wraps the native EventSource, so reconnection and Last-Event-ID resume are the
 *   browser's own; nothing here re-implements them.
 * - Filter changes go through POST /sse/subscribe with the connection id of the
 *   `connected` event, so changing filters never opens a second stream.
 * - All tabs of one origin that connect to the same URL with the same options share
 *   ONE stream: the tab holding a Web Lock (navigator.locks) is the leader, owns the
 *   EventSource and rebroadcasts every event on a BroadcastChannel. The browser frees
 *   the lock when the leader tab closes or crashes, and the next waiting tab takes
 *   over, resuming from the last event id it has seen (no gap, duplicates removed).
 *   Without navigator.locks or BroadcastChannel each tab keeps its own stream.
 * - A native EventSource gives up for good on a non-200 answer (a 503 from an instance
 *   that is shutting down, a 429): then a new one is opened after a growing delay.
 * - `rewind` (the newest N matching events first) is put in the URL only until a stream
 *   has opened and only while there is no last event id. The browser's own reconnects
 *   reuse that URL but send Last-Event-ID, and the server never rewinds a request that
 *   carries one; a tab that joins a shared stream joins it live (no rewind of its own).
 * Full API: docs/browser.md.
 */
(function (root) {
  "use strict";

  const SYSTEM_TYPES = ["connected", "subscription_updated", "stream_reset"];
  const STATUS_TYPES = ["open", "error", "leader"];
  const SEEN_IDS = 1024; // ids remembered to drop duplicates after a handover or filter re-apply

  function randomId() {
    return Math.random().toString(36).slice(2) + Date.now().toString(36);
  }

  function parse(raw) {
    try { return JSON.parse(raw); } catch (_) { return raw; }
  }

  function sortedOrNull(types) {
    return types == null ? null : Array.from(new Set(types)).sort();
  }

  /** A tag filter as {name: sorted values} with sorted names, or null for none. */
  function normalTags(tags) {
    if (tags == null) return null;
    const names = Object.keys(tags).sort();
    if (!names.length) return null;
    const normal = {};
    for (const name of names) {
      const given = tags[name];
      normal[name] = Array.from(new Set(typeof given === "string" ? [given] : given)).sort();
    }
    return normal;
  }

  function sameFilters(a, b) {
    return JSON.stringify(a.types) === JSON.stringify(b.types) && (a.project || null) === (b.project || null) &&
      JSON.stringify(a.tags || null) === JSON.stringify(b.tags || null);
  }

  class Client {
    /**
     * @param {string} url      the stream URL: "/sse/events", or an absolute URL of another origin
     * @param {object} options  types, project, tags, rewind, accessToken, withCredentials, share, channel, subscribeUrl
     */
    constructor(url, options) {
      options = options || {};
      this.url = new URL(url || "/sse/events", location.href);
      this.subscribeUrl = new URL(options.subscribeUrl || "subscribe", this.url);
      this.accessToken = options.accessToken || null;
      this.withCredentials = !!options.withCredentials;
      /** Filters of the stream: types (sorted list, or null = every type), project and tags
       *  ({name: [values]}, or null = no tag filter). */
      this.filters = {types: sortedOrNull(options.types), project: options.project || null,
                      tags: normalTags(options.tags)};
      /** The newest N matching events the first stream starts with (null: none). */
      this.rewind = options.rewind == null ? null : options.rewind;
      this._streamOpened = false;
      this.connectionId = null;
      this.lastEventId = options.lastEventId || null;
      this.isLeader = false;
      /** Delays (ms) before a stream the browser gave up on is opened again: doubled per failure. */
      this.reopenDelay = options.reopenDelay || 1000;
      this.maxReopenDelay = options.maxReopenDelay || 30000;
      this.reopens = 0;
      this._failures = 0;
      this.closed = false;
      this.tabId = randomId();
      this._listeners = new Map();
      this._seen = new Set();
      this._seenOrder = [];
      this._source = null;
      this._sourceTypes = new Set();
      this._sourceFilters = null;
      this._idWaiters = [];
      const canShare = typeof BroadcastChannel === "function" && typeof navigator !== "undefined" && navigator.locks;
      this.shared = options.share !== false && !!canShare;
      if (this.shared) {
        const key = options.channel ||
          ["trio-sse", this.url.href, (this.filters.types || ["*"]).join(","), this.filters.project || "",
           JSON.stringify(this.filters.tags)].join("|");
        this._channel = new BroadcastChannel(key);
        this._channel.onmessage = (message) => this._onMessage(message.data);
        this._abort = new AbortController();
        navigator.locks.request(key, {signal: this._abort.signal}, () => this._lead())
          .catch((error) => { if (!this.closed) this._emit("error", error, {type: "error"}); });
        this._post({kind: "hello"}); // the leader, if any, answers with its state
      } else {
        // Later, like a granted lock: listeners added right after connect() see "leader".
        Promise.resolve().then(() => this._lead());
      }
    }

    /** Call fn(data, event) for events of `type` ("*" = every application event). Returns an unsubscribe function. */
    on(type, fn) {
      if (!this._listeners.has(type)) this._listeners.set(type, new Set());
      this._listeners.get(type).add(fn);
      return () => this.off(type, fn);
    }

    off(type, fn) {
      const set = this._listeners.get(type);
      if (set) set.delete(fn);
    }

    /**
     * Change the live stream's filters (POST /sse/subscribe). Resolves with the server's
     * answer {connection_id, event_types, project_id}; rejects with an Error carrying
     * `status` and `body` for an HTTP error. Shared tabs change the one shared stream.
     * options: mode ("replace" | "add" | "remove"), project (string or null), tags ({name: [values]},
     * changed under mode as the types are; null clears), lastEventId, rewind (the newest N events the
     * new filters match that this stream was not sent; not with lastEventId).
     */
    async subscribe(types, options) {
      options = options || {};
      const body = {connection_id: await this._connectionId(), event_types: types, mode: options.mode || "replace"};
      if ("project" in options) body.project_id = options.project;
      if ("tags" in options) body.tags = options.tags;
      if (options.lastEventId) body.last_event_id = options.lastEventId;
      if (options.rewind != null) body.rewind = options.rewind;
      return this._postSubscribe(body);
    }

    /** Stop: a leader closes its stream and hands over to another tab; a follower just leaves. */
    close() {
      if (this.closed) return;
      this.closed = true;
      if (this._source) this._source.close();
      this._source = null;
      if (this._release) this._release();
      if (this._abort) this._abort.abort();
      if (this._channel) this._channel.close();
    }

    // -- leader -------------------------------------------------------------------

    _lead() {
      if (this.closed) return undefined;
      this.isLeader = true;
      this._emit("leader", true, {type: "leader"});
      this._open();
      // The lock is held until this promise resolves (close()) or the tab goes away.
      return new Promise((resolve) => { this._release = resolve; });
    }

    _open() {
      const url = new URL(this.url);
      if (this.filters.types) url.searchParams.set("types", this.filters.types.join(","));
      if (this.filters.project) url.searchParams.set("project", this.filters.project);
      for (const name of Object.keys(this.filters.tags || {})) {
        url.searchParams.set("tag." + name, this.filters.tags[name].join(","));
      }
      if (this.accessToken) url.searchParams.set("access_token", this.accessToken);
      // A takeover resumes where the previous leader stopped. Later reconnects send the
      // native Last-Event-ID header, which the server prefers over this parameter.
      if (this.lastEventId) url.searchParams.set("last_event_id", this.lastEventId);
      // Only before any stream opened: a reopen after the browser gave up resumes instead.
      else if (this.rewind != null && !this._streamOpened) url.searchParams.set("rewind", String(this.rewind));
      const source = new EventSource(url.href, {withCredentials: this.withCredentials});
      this._source = source;
      this._sourceTypes = new Set();
      this._sourceFilters = {types: this.filters.types, project: this.filters.project, tags: this.filters.tags};
      source.addEventListener("open", () => {
        this._failures = 0;
        this._streamOpened = true;
        this._status("open");
      });
      source.addEventListener("error", () => {
        this._status("error");
        // CONNECTING: the browser retries by itself. CLOSED: it gave up for good (a non-200
        // answer, e.g. 503 from an instance that is shutting down): open a new one later.
        if (source.readyState === EventSource.CLOSED && source === this._source) this._reopenLater();
      });
      for (const type of SYSTEM_TYPES.concat(["message"])) this._listen(type);
    }

    _reopenLater() {
      const delay = Math.min(this.maxReopenDelay, this.reopenDelay * Math.pow(2, this._failures));
      this._failures += 1;
      this.reopens += 1;
      // Jitter, so that the tabs of many users do not come back in one burst.
      setTimeout(() => { if (!this.closed && this.isLeader) this._open(); }, delay * (0.8 + 0.4 * Math.random()));
    }

    _listen(type) {
      // EventSource only dispatches a named event to listeners of that name.
      if (this._sourceTypes.has(type)) return;
      this._sourceTypes.add(type);
      this._source.addEventListener(type, (e) => this._fromSource(e));
    }

    _fromSource(e) {
      const system = SYSTEM_TYPES.includes(e.type);
      const event = {type: e.type, id: system ? null : (e.lastEventId || null), raw: e.data};
      if (e.type === "connected" || e.type === "subscription_updated") {
        const info = parse(e.data);
        for (const type of info.event_types || []) this._listen(type);
        if (e.type === "connected") {
          this.connectionId = info.connection_id;
          this._wakeIdWaiters();
          // After a native reconnect the URL's filters are back: re-apply the current ones,
          // replaying what they match since the last event this tab saw.
          if (!sameFilters(this._sourceFilters, this.filters)) this._reapply();
        } else {
          this.filters = {types: sortedOrNull(info.event_types), project: info.project_id, tags: normalTags(info.tags)};
        }
        this._post({kind: "state", state: this._state()});
      }
      if (this._deliver(event)) this._post({kind: "event", event: event});
    }

    _reapply() {
      const body = {connection_id: this.connectionId, event_types: this.filters.types || [], mode: "replace",
                    project_id: this.filters.project, tags: this.filters.tags};
      if (this.lastEventId) body.last_event_id = this.lastEventId;
      this._postSubscribe(body).catch((error) => this._emit("error", error, {type: "error"}));
    }

    _status(type) {
      this._emit(type, null, {type: type});
      this._post({kind: "status", type: type});
    }

    // -- follower -----------------------------------------------------------------

    _onMessage(message) {
      if (!message || this.closed) return;
      if (message.kind === "hello") {
        if (this.isLeader) this._post({kind: "state", state: this._state()});
      } else if (message.kind === "state") {
        const state = message.state;
        this.connectionId = state.connectionId;
        this.filters = state.filters;
        if (state.lastEventId && !this.lastEventId) this.lastEventId = state.lastEventId;
        this._wakeIdWaiters();
      } else if (message.kind === "event") {
        this._deliver(message.event);
      } else if (message.kind === "status") {
        this._emit(message.type, null, {type: message.type});
      }
    }

    _state() {
      return {connectionId: this.connectionId, filters: this.filters, lastEventId: this.lastEventId};
    }

    // -- common -------------------------------------------------------------------

    /** Dispatch an event here once; false for a duplicate or a type outside the filters. */
    _deliver(event) {
      if (event.id) {
        if (this._seen.has(event.id)) return false;
        // Replays under stale filters (before a re-apply) may carry types no longer wanted.
        if (this.filters.types && !this.filters.types.includes(event.type)) return false;
        this._seen.add(event.id);
        this._seenOrder.push(event.id);
        if (this._seenOrder.length > SEEN_IDS) this._seen.delete(this._seenOrder.shift());
        this.lastEventId = event.id;
      }
      const data = parse(event.raw);
      this._emit(event.type, data, event);
      if (event.id) this._emit("*", data, event);
      return true;
    }

    _emit(type, data, event) {
      const set = this._listeners.get(type);
      if (!set) return;
      for (const fn of Array.from(set)) {
        try { fn(data, event); } catch (error) { setTimeout(() => { throw error; }); }
      }
    }

    _post(message) {
      if (this._channel && !this.closed) this._channel.postMessage(message);
    }

    _connectionId() {
      if (this.connectionId) return Promise.resolve(this.connectionId);
      return new Promise((resolve) => this._idWaiters.push(resolve));
    }

    _wakeIdWaiters() {
      if (!this.connectionId) return;
      const waiters = this._idWaiters;
      this._idWaiters = [];
      for (const resolve of waiters) resolve(this.connectionId);
    }

    async _postSubscribe(body) {
      const headers = {"Content-Type": "application/json"};
      if (this.accessToken) headers.Authorization = "Bearer " + this.accessToken;
      const reply = await fetch(this.subscribeUrl.href, {
        method: "POST", headers: headers, body: JSON.stringify(body),
        credentials: this.withCredentials ? "include" : "same-origin",
      });
      const answer = await reply.json().catch(() => null);
      if (!reply.ok) {
        const error = new Error((answer && answer.message) || "subscribe failed: HTTP " + reply.status);
        error.status = reply.status;
        error.body = answer;
        throw error;
      }
      return answer;
    }
  }

  root.TrioSSE = {
    /** Open (or join) a stream; see Client. */
    connect: (url, options) => new Client(url, options),
    Client: Client,
    STATUS_TYPES: STATUS_TYPES,
    SYSTEM_TYPES: SYSTEM_TYPES,
  };
})(typeof self !== "undefined" ? self : this);
