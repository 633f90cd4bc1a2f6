/*
 * cpweb agent console (SPEC §4). Connects to /ws/console/, shows the open
 * conversations with their identity, and the thread of the one the agent
 * selects. State comes from the snapshot sent on every (re)connect, then from
 * events, so a dropped socket loses nothing. Untrusted text (names, messages)
 * is only ever set with textContent.
 */
(function () {
  "use strict";
  var config = JSON.parse(document.getElementById("console-config").textContent);
  // Replies sent and not yet acked: client_msg_id -> text.
  var unacked = new Map();
  var state = {
    conversations: new Map(), // id -> Conversation
    messages: new Map(), // id -> Map(message_id -> message), for watched conversations
    selected: null,
    socket: null,
    attempt: 0,
  };
  var $ = function (selector) {
    return document.querySelector(selector);
  };
  var els = {
    connection: $("#connection"),
    list: $("#conversation-list"),
    count: $("#count"),
    empty: $("#empty"),
    placeholder: $("#placeholder"),
    conversation: $("#conversation"),
    headline: $("#conversation .headline"),
    identifier: $("#conversation .identifier"),
    badges: $("#conversation .badges"),
    extension: $("#conversation .extension"),
    thread: $("#conversation .thread"),
    replyForm: $("#reply-form"),
    replyText: $("#reply-text"),
    replyError: $("#conversation .reply-error"),
  };

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function link(href, text) {
    var a = el("a", "", text);
    a.href = href;
    return a;
  }
  function newId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return Date.now().toString(36) + Math.random().toString(36).slice(2);
  }
  function contactUrl(id) {
    return config.adminUrl + encodeURIComponent(id) + "/change/";
  }

  // --- Identity, as agents read it ----------------------------------------------

  function badges(identity) {
    var list = [];
    if (identity.status === "matched") list.push(["matched", "matched"]);
    else if (identity.status === "unmatched") list.push(["unmatched", "not in directory"]);
    else if (identity.status === "ambiguous")
      list.push(["ambiguous", "several contacts (" + identity.candidates_total + ")"]);
    else if (identity.status === "withheld") list.push(["withheld", "withheld number"]);
    list.push(identity.verified ? ["verified", "verified"] : ["unverified", "unverified"]);
    if (identity.name_source === "platform") list.push(["platform", "name from " + identity.identifier.channel]);
    if (identity.name_source === "crm") list.push(["crm", "name from CRM"]);
    return list;
  }

  function identifierLine(conversation) {
    var identity = conversation.identity;
    var id = identity.identifier;
    var parts = [conversation.channel];
    if (identity.status === "ambiguous") {
      parts.push((id.value || id.raw) + " — shared by " + identity.candidates_total + " contacts");
    } else if (id.value) {
      parts.push(id.value);
    }
    if (id.raw && id.raw !== id.value && identity.status !== "withheld") parts.push("received as " + id.raw);
    if (conversation.call_state) parts.push("call " + conversation.call_state);
    if (conversation.subject) parts.push("“" + conversation.subject + "”");
    return parts.join(" · ");
  }

  function addToDirectoryUrl(identity) {
    var id = identity.identifier;
    var params = new URLSearchParams();
    if (id.kind === "email") params.set("email", id.value);
    else if (id.kind === "phone") params.set("phone", id.value);
    else {
      params.set("chat_channel", id.channel);
      params.set("chat_id", id.value);
    }
    var name = identity.name_source === "platform" ? identity.display_name : identity.claimed_name;
    if (name) params.set("name", name);
    return config.adminUrl + "add/?" + params.toString();
  }

  function screenpopUrl(handoff) {
    // CRM_SCREENPOP_URL, checked at start-up to be http(s), with every {kind}
    // and {value} replaced; the value is URL-encoded.
    if (!config.crmScreenpopUrl || !handoff.value) return null;
    return config.crmScreenpopUrl
      .split("{kind}")
      .join(encodeURIComponent(handoff.kind))
      .split("{value}")
      .join(encodeURIComponent(handoff.value));
  }

  function crmLink(href, text) {
    var span = el("span", "crm-link");
    span.appendChild(document.createTextNode(" "));
    var a = link(href, text);
    a.target = "_blank";
    a.rel = "noopener";
    span.appendChild(a);
    return span;
  }

  function renderExtension(identity) {
    var box = els.extension;
    box.textContent = "";
    if (identity.contact) {
      box.appendChild(el("h3", "", "Directory contact"));
      var p = el("p");
      p.appendChild(link(contactUrl(identity.contact.id), identity.contact.name));
      var details = [identity.contact.company, identity.contact.external_id && "ID " + identity.contact.external_id]
        .filter(Boolean)
        .join(" · ");
      if (details) p.appendChild(document.createTextNode(" — " + details));
      box.appendChild(p);
    }
    if (identity.candidates && identity.candidates.length) {
      box.appendChild(el("h3", "", "Shared by " + identity.candidates_total + " contacts"));
      var ul = el("ul", "candidates");
      identity.candidates.forEach(function (candidate) {
        var li = el("li");
        li.appendChild(link(contactUrl(candidate.id), candidate.name));
        if (candidate.company) li.appendChild(document.createTextNode(" — " + candidate.company));
        ul.appendChild(li);
      });
      box.appendChild(ul);
      if (identity.candidates_total > identity.candidates.length)
        box.appendChild(el("p", "reason", "…and " + (identity.candidates_total - identity.candidates.length) + " more."));
    }
    if (identity.possible_match) {
      box.appendChild(el("h3", "", "Possible directory match"));
      var match = el("p", "possible-match");
      match.appendChild(link(contactUrl(identity.possible_match.id), identity.possible_match.name));
      if (identity.possible_match.company)
        match.appendChild(document.createTextNode(" — " + identity.possible_match.company));
      box.appendChild(match);
      box.appendChild(el("p", "reason", identity.possible_match.reason));
    }
    if (identity.claimed_name) {
      box.appendChild(el("p", "claimed", "Says they are: " + identity.claimed_name + " (not verified)"));
    }
    if (identity.status === "unmatched" && config.canAddContacts) {
      var add = link(addToDirectoryUrl(identity), "Add to directory");
      add.className = "add-contact";
      add.target = "_blank";
      add.rel = "noopener";
      box.appendChild(el("p")).appendChild(add);
    }
    if (identity.crm) {
      var crm = el("p", "crm", "CRM: " + identity.crm.kind + " " + (identity.crm.value || "(withheld)"));
      // record_url comes from the CRM's webhook answer; the server keeps only http(s) ones.
      if (identity.crm.record_url) crm.appendChild(crmLink(identity.crm.record_url, "CRM record"));
      var pop = screenpopUrl(identity.crm);
      if (pop) crm.appendChild(crmLink(pop, "Open in CRM"));
      box.appendChild(crm);
    }
    box.appendChild(el("p", "reason", identity.reason));
  }

  // --- Rendering ----------------------------------------------------------------

  function sortedConversations() {
    return Array.from(state.conversations.values()).sort(function (a, b) {
      return a.started_at < b.started_at ? 1 : a.started_at > b.started_at ? -1 : 0;
    });
  }

  function renderList() {
    var conversations = sortedConversations();
    els.list.textContent = "";
    conversations.forEach(function (conversation) {
      var li = el("li", conversation.state === "ended" ? "ended" : "");
      var button = el("button");
      button.type = "button";
      button.dataset.conversationId = conversation.id;
      if (conversation.id === state.selected) button.setAttribute("aria-current", "true");
      button.appendChild(el("span", "title", conversation.identity.display_name));
      var sub = badges(conversation.identity)
        .map(function (b) {
          return b[1];
        })
        .join(" · ");
      var callState = conversation.call_state && conversation.state !== "ended" ? " · " + conversation.call_state : "";
      button.appendChild(el("span", "sub", conversation.channel + callState + " · " + sub + (conversation.state === "ended" ? " · ended" : "")));
      button.addEventListener("click", function () {
        select(conversation.id);
      });
      li.appendChild(button);
      els.list.appendChild(li);
    });
    var open = conversations.filter(function (c) {
      return c.state === "open";
    }).length;
    els.count.textContent = "(" + open + ")";
    els.empty.hidden = conversations.length > 0;
  }

  function renderDetail() {
    var conversation = state.selected && state.conversations.get(state.selected);
    els.placeholder.hidden = !!conversation;
    els.conversation.hidden = !conversation;
    if (!conversation) return;
    var identity = conversation.identity;
    els.headline.textContent = identity.display_name;
    els.identifier.textContent = identifierLine(conversation);
    els.badges.textContent = "";
    badges(identity).forEach(function (b) {
      els.badges.appendChild(el("li", "badge " + b[0], b[1]));
    });
    renderExtension(identity);
    els.replyForm.hidden = conversation.state !== "open";
  }

  function renderThread() {
    els.thread.textContent = "";
    var messages = state.messages.get(state.selected);
    if (!messages) return;
    Array.from(messages.values())
      .sort(function (a, b) {
        return a.message_id - b.message_id;
      })
      .forEach(function (message) {
        var li = el("li", message.sender);
        li.appendChild(el("span", "text", message.text));
        var when = new Date(message.sent_at);
        li.appendChild(el("span", "meta", (message.sender === "agent" ? "Agent" : "Customer") + " · " + when.toLocaleTimeString()));
        els.thread.appendChild(li);
      });
    els.thread.scrollTop = els.thread.scrollHeight;
  }

  function notifyCrm(event, conversation) {
    // Embedded in a CRM frame: hand over the identifier, to the CRM's origin
    // only (the browser drops it if the parent is anyone else); never "*".
    var identity = conversation.identity;
    if (!identity.crm || !config.crmOrigin || window.parent === window) return;
    window.parent.postMessage(
      {
        type: "cpweb.identity",
        event: event,
        conversation_id: conversation.id,
        channel: conversation.channel,
        crm: identity.crm,
        display_name: identity.display_name,
        name_source: identity.name_source,
        status: identity.status,
      },
      config.crmOrigin
    );
  }

  // --- Socket -------------------------------------------------------------------

  function send(frame) {
    if (state.socket && state.socket.readyState === WebSocket.OPEN) {
      state.socket.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  function select(id) {
    if (state.selected && state.selected !== id) send({ type: "unwatch", conversation_id: state.selected });
    state.selected = id;
    state.messages.set(id, new Map());
    send({ type: "watch", conversation_id: id });
    renderList();
    renderDetail();
    renderThread();
    els.replyText.focus();
  }

  function handle(frame) {
    if (frame.type === "snapshot") {
      state.conversations = new Map();
      frame.conversations.forEach(function (c) {
        state.conversations.set(c.id, c);
      });
      if (state.selected) {
        // A new socket watches nothing: watch again, and take the history afresh.
        state.messages.set(state.selected, new Map());
        if (state.conversations.has(state.selected)) send({ type: "watch", conversation_id: state.selected });
      }
      renderList();
      renderDetail();
      renderThread();
    } else if (frame.type === "conversation") {
      state.conversations.set(frame.conversation.id, frame.conversation);
      if (frame.event === "identified" || frame.event === "updated") notifyCrm(frame.event, frame.conversation);
      renderList();
      if (frame.conversation.id === state.selected) renderDetail();
    } else if (frame.type === "message") {
      var messages = state.messages.get(frame.conversation_id);
      if (messages) messages.set(frame.message.message_id, frame.message);
      var conversation = state.conversations.get(frame.conversation_id);
      if (conversation) conversation.last_message = frame.message;
      if (frame.conversation_id === state.selected) renderThread();
    } else if (frame.type === "ack") {
      unacked.delete(frame.client_msg_id);
      els.replyError.textContent = "";
    } else if (frame.type === "error") {
      els.replyError.textContent = frame.message;
      // A reply that was not stored goes back into the box, to send again.
      var text = unacked.get(frame.client_msg_id);
      unacked.delete(frame.client_msg_id);
      if (text && !els.replyText.value) els.replyText.value = text;
    }
  }

  function setConnection(text, down) {
    els.connection.textContent = text;
    els.connection.classList.toggle("down", !!down);
  }

  function connect() {
    var url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws/console/";
    var socket = new WebSocket(url);
    state.socket = socket;
    socket.onopen = function () {
      state.attempt = 0;
      setConnection("Live");
    };
    socket.onmessage = function (event) {
      handle(JSON.parse(event.data));
    };
    socket.onclose = function (event) {
      state.socket = null;
      if (event.code === 4401) {
        location.href = "/accounts/login/?next=/console/";
        return;
      }
      if (event.code === 4403) {
        setConnection("You do not have permission to see conversations.", true);
        return;
      }
      var delay = Math.min(15000, 500 * Math.pow(2, state.attempt++)) * (0.75 + Math.random() / 2);
      setConnection("Connection lost. Reconnecting…", true);
      setTimeout(connect, delay);
    };
  }

  els.replyForm.addEventListener("submit", function (event) {
    event.preventDefault();
    var text = els.replyText.value;
    if (!text.trim() || !state.selected) return;
    var clientMsgId = newId();
    if (send({ type: "reply", conversation_id: state.selected, text: text, client_msg_id: clientMsgId })) {
      unacked.set(clientMsgId, text);
      els.replyText.value = "";
    } else {
      els.replyError.textContent = "Not connected; your reply was kept. Try again in a moment.";
    }
  });
  els.replyText.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      els.replyForm.requestSubmit();
    }
  });

  connect();
})();
