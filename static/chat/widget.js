/*
 * cpweb web chat widget (SPEC §3). One tag on any page:
 *
 *   <script src="https://HOST/static/chat/widget.js" data-server="https://HOST" defer></script>
 *
 * Optional attributes, set by the host site's backend for a signed-in user:
 *   data-email, data-name, data-identity-hash (hex HMAC-SHA256 of the normalised email).
 *
 * No framework, no dependency; everything lives in a shadow root so the host
 * page's styles and ours leave each other alone. Text from the network is
 * only ever set with textContent.
 */
(function () {
  "use strict";
  if (window.__cpwebWidget) return;
  window.__cpwebWidget = true;

  var script =
    document.currentScript || document.querySelector('script[src*="/static/chat/widget.js"]');
  var data = (script && script.dataset) || {};
  var server = (data.server || new URL(script.src, location.href).origin).replace(/\/+$/, "");
  var socketUrl = server.replace(/^http/, "ws") + "/ws/chat/";
  var storeKey = "cpweb.chat:" + server;

  // --- Persistence: the conversation survives reloads and dropped sockets. ---

  function load() {
    try {
      return JSON.parse(localStorage.getItem(storeKey)) || {};
    } catch (e) {
      return {};
    }
  }
  function save() {
    try {
      localStorage.setItem(
        storeKey,
        JSON.stringify({ token: chat.token, conversationId: chat.conversationId, outbox: chat.outbox, open: ui.isOpen })
      );
    } catch (e) {
      /* private mode: the chat still works for this page */
    }
  }
  function newId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return Date.now().toString(36) + Math.random().toString(36).slice(2);
  }

  var stored = load();
  var chat = {
    token: stored.token || null,
    conversationId: stored.conversationId || null,
    outbox: stored.outbox || [], // messages sent but not acknowledged: [{client_msg_id, text}]
    lastId: 0,
    seen: {}, // message_id -> true
    socket: null,
    attempt: 0,
    pendingStart: null,
    ended: false,
  };

  // --- DOM --------------------------------------------------------------------

  var host = document.createElement("div");
  host.id = "cpweb-chat";
  var root = host.attachShadow({ mode: "open" });
  root.innerHTML =
    "<style>" +
    ":host{all:initial}" +
    "*{box-sizing:border-box;font-family:system-ui,-apple-system,'Segoe UI',sans-serif}" +
    ".launcher{position:fixed;right:20px;bottom:20px;z-index:2147483000;border:0;border-radius:28px;" +
    "padding:14px 20px;background:#1f4e79;color:#fff;font-size:15px;cursor:pointer;box-shadow:0 4px 14px rgba(0,0,0,.25)}" +
    ".launcher:focus-visible,button:focus-visible,input:focus-visible,textarea:focus-visible{outline:3px solid #f2b705;outline-offset:2px}" +
    ".panel{position:fixed;right:20px;bottom:84px;z-index:2147483000;width:340px;max-width:calc(100vw - 40px);" +
    "height:460px;max-height:calc(100vh - 110px);background:#fff;color:#1d2330;border-radius:12px;" +
    "box-shadow:0 8px 30px rgba(0,0,0,.3);display:flex;flex-direction:column;overflow:hidden}" +
    ".panel[hidden]{display:none}" +
    ".head{background:#1f4e79;color:#fff;padding:12px 14px;display:flex;align-items:center;justify-content:space-between}" +
    ".head h2{margin:0;font-size:16px}" +
    ".close{background:transparent;border:0;color:#fff;font-size:20px;cursor:pointer;line-height:1}" +
    ".body{flex:1;overflow:auto;padding:14px}" +
    "form.prechat label{display:block;font-size:14px;margin:10px 0 4px}" +
    "input,textarea{width:100%;padding:8px;border:1px solid #9aa5b5;border-radius:6px;font-size:14px}" +
    ".primary{margin-top:14px;width:100%;padding:10px;border:0;border-radius:6px;background:#1f4e79;color:#fff;font-size:15px;cursor:pointer}" +
    ".error{color:#b00020;font-size:13px;margin:8px 0 0;min-height:1em}" +
    ".status{font-size:12px;color:#5b6575;padding:0 14px 6px;min-height:1.2em}" +
    ".log{list-style:none;margin:0;padding:0}" +
    ".msg{margin:6px 0;padding:8px 10px;border-radius:10px;max-width:85%;white-space:pre-wrap;word-wrap:break-word;font-size:14px}" +
    ".msg.visitor{background:#e3edf7;margin-left:auto}" +
    ".msg.agent{background:#f0f0f0}" +
    ".msg .meta{display:block;font-size:11px;color:#5b6575;margin-top:2px}" +
    ".compose{display:flex;gap:6px;padding:10px;border-top:1px solid #e2e6ec}" +
    ".compose textarea{height:42px;resize:none}" +
    ".compose button{padding:0 14px;border:0;border-radius:6px;background:#1f4e79;color:#fff;cursor:pointer}" +
    ".end{background:transparent;border:1px solid #fff;color:#fff;border-radius:6px;font-size:12px;padding:3px 8px;cursor:pointer;margin-right:8px}" +
    "</style>" +
    '<button class="launcher" type="button" aria-expanded="false" aria-controls="cpweb-panel">Chat with us</button>' +
    '<section class="panel" id="cpweb-panel" role="dialog" aria-labelledby="cpweb-title" hidden>' +
    '  <div class="head"><h2 id="cpweb-title">Chat with us</h2>' +
    '    <div><button class="end" type="button" hidden>End chat</button>' +
    '    <button class="close" type="button" aria-label="Close chat">&times;</button></div></div>' +
    '  <div class="body">' +
    '    <form class="prechat" novalidate>' +
    '      <p>Tell us your email and we will be right with you.</p>' +
    '      <label for="cpweb-email">Email</label>' +
    '      <input id="cpweb-email" name="email" type="email" autocomplete="email" required aria-describedby="cpweb-email-error">' +
    '      <label for="cpweb-name">Name (optional)</label>' +
    '      <input id="cpweb-name" name="name" type="text" autocomplete="name" maxlength="200">' +
    '      <p class="error" id="cpweb-email-error" role="alert"></p>' +
    '      <button class="primary" type="submit">Start chat</button>' +
    "    </form>" +
    '    <ol class="log" role="log" aria-live="polite" aria-label="Conversation" hidden></ol>' +
    '    <div class="ended" hidden><p>This chat has ended. Thank you!</p>' +
    '      <button class="primary restart" type="button">Start a new chat</button></div>' +
    "  </div>" +
    '  <p class="status" role="status" aria-live="polite"></p>' +
    '  <form class="compose" hidden>' +
    '    <label for="cpweb-text" style="position:absolute;left:-9999px">Message</label>' +
    '    <textarea id="cpweb-text" name="text" maxlength="4000" placeholder="Type a message…"></textarea>' +
    '    <button type="submit">Send</button>' +
    "  </form>" +
    "</section>";

  function $(selector) {
    return root.querySelector(selector);
  }
  var ui = {
    isOpen: false,
    launcher: $(".launcher"),
    panel: $(".panel"),
    close: $(".close"),
    endButton: $(".end"),
    prechat: $(".prechat"),
    email: $("#cpweb-email"),
    name: $("#cpweb-name"),
    emailError: $("#cpweb-email-error"),
    log: $(".log"),
    ended: $(".ended"),
    restart: $(".restart"),
    status: $(".status"),
    compose: $(".compose"),
    text: $("#cpweb-text"),
  };
  if (data.email) ui.email.value = data.email;
  if (data.name) ui.name.value = data.name;

  function setOpen(open) {
    ui.isOpen = open;
    ui.panel.hidden = !open;
    ui.launcher.setAttribute("aria-expanded", String(open));
    save();
    if (open) {
      (chat.token && !chat.ended ? ui.text : ui.email).focus();
      connect();
    } else {
      ui.launcher.focus();
    }
  }

  function show(view) {
    ui.prechat.hidden = view !== "prechat";
    ui.log.hidden = view === "prechat";
    ui.compose.hidden = view !== "chat";
    ui.endButton.hidden = view !== "chat";
    ui.ended.hidden = view !== "ended";
  }

  function setStatus(text) {
    ui.status.textContent = text;
  }

  function addMessage(sender, text, options) {
    options = options || {};
    var item = document.createElement("li");
    item.className = "msg " + sender;
    var body = document.createElement("span");
    body.textContent = text;
    var meta = document.createElement("span");
    meta.className = "meta";
    meta.textContent = options.pending ? "Sending…" : sender === "agent" ? "Agent" : "You";
    item.appendChild(body);
    item.appendChild(meta);
    if (options.clientId) item.dataset.clientId = options.clientId;
    if (options.messageId) item.dataset.messageId = String(options.messageId);
    ui.log.appendChild(item);
    item.scrollIntoView({ block: "end" });
    return item;
  }

  function receiveMessage(frame) {
    if (chat.seen[frame.message_id]) return;
    chat.seen[frame.message_id] = true;
    chat.lastId = Math.max(chat.lastId, frame.message_id);
    addMessage(frame.sender, frame.text, { messageId: frame.message_id });
  }

  // --- Socket -----------------------------------------------------------------

  function send(frame) {
    if (chat.socket && chat.socket.readyState === WebSocket.OPEN) {
      chat.socket.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  function connect() {
    if (chat.socket && chat.socket.readyState <= WebSocket.OPEN) return;
    var socket = new WebSocket(socketUrl);
    chat.socket = socket;
    socket.onopen = function () {
      // The backoff is reset by "started", not here: a socket the server
      // accepts only to refuse (4429, too many from this address) opens too.
      setStatus("");
      if (chat.token) {
        send({ type: "resume", token: chat.token, after: chat.lastId });
      } else if (chat.pendingStart) {
        send(chat.pendingStart);
      }
    };
    socket.onmessage = function (event) {
      var frame;
      try {
        frame = JSON.parse(event.data);
      } catch (e) {
        return;
      }
      handle(frame);
    };
    socket.onclose = function (event) {
      chat.socket = null;
      if (!ui.isOpen && !chat.token) return;
      var refused = event.code === 4429;
      var delay = refused
        ? 15000 * (0.75 + Math.random() / 2)
        : Math.min(15000, 500 * Math.pow(2, chat.attempt++)) * (0.75 + Math.random() / 2);
      // A refusal keeps the server's reason on screen (its error frame came first).
      if (!refused) setStatus("Connection lost. Reconnecting…");
      setTimeout(connect, delay);
    };
  }

  function handle(frame) {
    switch (frame.type) {
      case "started":
        chat.attempt = 0;
        chat.token = frame.token;
        chat.conversationId = frame.conversation_id;
        chat.pendingStart = null;
        chat.ended = false;
        save();
        show("chat");
        // Messages never acknowledged before the connection dropped: send again;
        // the server recognises a repeated client_msg_id and stores it once.
        chat.outbox.forEach(function (pending) {
          send({ type: "message", text: pending.text, client_msg_id: pending.client_msg_id });
        });
        break;
      case "ack": {
        chat.outbox = chat.outbox.filter(function (m) {
          return m.client_msg_id !== frame.client_msg_id;
        });
        save();
        var item = ui.log.querySelector('[data-client-id="' + CSS.escape(frame.client_msg_id) + '"]');
        if (chat.seen[frame.message_id]) {
          if (item) item.remove();
        } else if (item) {
          chat.seen[frame.message_id] = true;
          chat.lastId = Math.max(chat.lastId, frame.message_id);
          item.dataset.messageId = String(frame.message_id);
          item.querySelector(".meta").textContent = "You";
        }
        break;
      }
      case "message":
        receiveMessage(frame);
        break;
      case "ended":
        chat.ended = true;
        chat.token = null;
        chat.conversationId = null;
        chat.outbox = [];
        save();
        show("ended");
        break;
      case "error":
        handleError(frame);
        break;
    }
  }

  function handleError(frame) {
    if (frame.code === "invalid_email" || frame.code === "identity_required" ||
        frame.code === "invalid_identity_hash") {
      chat.pendingStart = null;
      ui.emailError.textContent = frame.message;
      ui.email.setAttribute("aria-invalid", "true");
      ui.email.focus();
    } else if (frame.code === "invalid_token") {
      // The stored conversation is gone: start afresh.
      chat.token = null;
      chat.conversationId = null;
      chat.outbox = [];
      save();
      ui.log.textContent = "";
      show("prechat");
    } else if (frame.code === "conversation_ended") {
      show("ended");
    } else if (frame.code === "unavailable" && frame.client_msg_id) {
      // The server could not store it (its database is restarting): the
      // message is still in the outbox; send it again in a moment.
      setStatus(frame.message);
      setTimeout(function () {
        chat.outbox.forEach(function (pending) {
          if (pending.client_msg_id === frame.client_msg_id) {
            send({ type: "message", text: pending.text, client_msg_id: pending.client_msg_id });
          }
        });
      }, 2000);
    } else {
      setStatus(frame.message);
    }
  }

  // --- Events -----------------------------------------------------------------

  ui.launcher.addEventListener("click", function () {
    setOpen(!ui.isOpen);
  });
  ui.close.addEventListener("click", function () {
    setOpen(false);
  });
  ui.panel.addEventListener("keydown", function (event) {
    if (event.key === "Escape") setOpen(false);
  });

  ui.prechat.addEventListener("submit", function (event) {
    event.preventDefault();
    var email = ui.email.value.trim();
    if (!email || !ui.email.checkValidity()) {
      ui.emailError.textContent = "Please enter a valid email address, like name@example.com.";
      ui.email.setAttribute("aria-invalid", "true");
      ui.email.focus();
      return;
    }
    ui.emailError.textContent = "";
    ui.email.removeAttribute("aria-invalid");
    var start = { type: "start", email: email };
    if (ui.name.value.trim()) start.name = ui.name.value.trim();
    if (data.identityHash && data.email && data.email.toLowerCase() === email.toLowerCase()) {
      start.identity_hash = data.identityHash;
    }
    chat.pendingStart = start;
    if (!send(start)) connect();
  });

  ui.compose.addEventListener("submit", function (event) {
    event.preventDefault();
    var text = ui.text.value;
    if (!text.trim()) return;
    var pending = { client_msg_id: newId(), text: text };
    chat.outbox.push(pending);
    save();
    addMessage("visitor", text, { pending: true, clientId: pending.client_msg_id });
    ui.text.value = "";
    ui.text.focus();
    if (!send({ type: "message", text: text, client_msg_id: pending.client_msg_id })) connect();
  });
  ui.text.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      ui.compose.requestSubmit();
    }
  });

  ui.endButton.addEventListener("click", function () {
    send({ type: "end" });
  });
  ui.restart.addEventListener("click", function () {
    ui.log.textContent = "";
    chat.seen = {};
    chat.lastId = 0;
    show("prechat");
    ui.email.focus();
  });

  function mount() {
    document.body.appendChild(host);
    show(chat.token ? "chat" : "prechat");
    // Unsent messages from the last page are shown until the server acknowledges them.
    chat.outbox.forEach(function (pending) {
      addMessage("visitor", pending.text, { pending: true, clientId: pending.client_msg_id });
    });
    if (chat.token) connect();
    if (stored.open) setOpen(true);
  }
  if (document.body) mount();
  else document.addEventListener("DOMContentLoaded", mount);
})();
