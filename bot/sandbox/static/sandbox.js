// The stepup Slack sandbox page: everything is rendered on the server; this script only picks
// who is acting, swaps in the HTML it is given, and turns clicks into sandbox API calls.
"use strict";

const POLL_MS = 1000;
const state = { user: null, conversation: null, version: "", data: null, busy: false };
const $ = (selector) => document.querySelector(selector);

async function api(path, body) {
  const options = body === undefined ? {} : {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  };
  const response = await fetch(path, options);
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

function say(text) { $("#status").textContent = text; }

function drawSidebar() {
  const nav = $("#sidebar");
  nav.replaceChildren();
  for (const c of state.data.conversations) {
    const link = document.createElement("a");
    link.textContent = c.name;
    link.dataset.conversation = c.id;
    link.dataset.kind = c.kind;
    if (c.id === state.conversation) link.classList.add("active");
    nav.appendChild(link);
  }
}

function drawConversation() {
  const pane = $("#conversation");
  const chosen = state.data.conversations.find((c) => c.id === state.conversation)
    || state.data.conversations[0];
  state.conversation = chosen.id;
  pane.dataset.conversationId = chosen.id;
  pane.dataset.kind = chosen.kind;
  pane.innerHTML = `<h2 class="sk-conversation-title">${escapeText(chosen.name)}</h2>` + chosen.html;
}

function drawModal() {
  const modal = $("#modal");
  const view = state.data.modal;
  const typed = collectValues();
  if (!view) {
    modal.hidden = true;
    $("#overlay").hidden = true;
    modal.dataset.viewId = "";
    modal.dataset.callbackId = "";
    modal.replaceChildren();
    return;
  }
  const same = modal.dataset.viewId === view.id;
  modal.dataset.viewId = view.id;
  modal.dataset.callbackId = view.callback_id;
  modal.innerHTML = view.html;
  if (same) restoreValues(typed);
  modal.hidden = false;
  $("#overlay").hidden = false;
}

function escapeText(text) {
  const span = document.createElement("span");
  span.textContent = text;
  return span.innerHTML;
}

function collectValues() {
  const values = {};
  for (const input of document.querySelectorAll("#modal [data-action-id].sk-input")) {
    const block = input.closest("[data-block-id]");
    const blockId = block ? block.dataset.blockId : "";
    values[blockId] = values[blockId] || {};
    values[blockId][input.dataset.actionId] = input.value;
  }
  return values;
}

function restoreValues(values) {
  for (const input of document.querySelectorAll("#modal [data-action-id].sk-input")) {
    const block = input.closest("[data-block-id]");
    const held = values[block ? block.dataset.blockId : ""];
    if (held && input.dataset.actionId in held) input.value = held[input.dataset.actionId];
  }
}

async function refresh(force) {
  if (!state.user) return;
  const since = force ? "" : state.version;
  const answer = await api(`/sandbox/api/state?user=${encodeURIComponent(state.user)}&since=${since}`);
  if (answer.unchanged) return;
  state.version = answer.version;
  state.data = answer;
  drawSidebar();
  drawConversation();
  drawModal();
  document.body.dataset.version = answer.version;
}

async function act(button) {
  const message = button.closest("[data-ts]");
  const modal = button.closest("#modal");
  const body = { user: state.user, action_id: button.dataset.actionId, value: button.dataset.value || "" };
  if (modal) body.view_id = modal.dataset.viewId;
  else if (message) { body.channel = message.dataset.channel; body.ts = message.dataset.ts; }
  button.disabled = true;
  try {
    const answer = await api("/sandbox/api/action", body);
    say(`${button.textContent.trim()}: sent (HTTP ${answer.status})`);
  } finally {
    button.disabled = false;
  }
  await refresh(true);
}

async function submitModal() {
  const modal = $("#modal");
  const answer = await api("/sandbox/api/submit", {
    user: state.user, view_id: modal.dataset.viewId, values: collectValues(),
  });
  for (const box of modal.querySelectorAll(".sk-input-error")) { box.hidden = true; box.textContent = ""; }
  if (answer.errors) {
    for (const [blockId, text] of Object.entries(answer.errors)) {
      const box = modal.querySelector(`.sk-input-error[data-error-for="${CSS.escape(blockId)}"]`);
      if (box) { box.textContent = text; box.hidden = false; }
    }
    say("the bot refused the form");
    return;
  }
  say(`submitted (HTTP ${answer.status})`);
  await refresh(true);
}

async function closeModal() {
  const modal = $("#modal");
  await api("/sandbox/api/close", { user: state.user, view_id: modal.dataset.viewId });
  await refresh(true);
}

document.addEventListener("click", (event) => {
  const target = event.target.closest("button, #sidebar a");
  if (!target) return;
  if (target.matches("#sidebar a")) {
    state.conversation = target.dataset.conversation;
    if (target.dataset.kind === "home") api("/sandbox/api/home", { user: state.user }).catch(report);
    drawSidebar();
    drawConversation();
    return;
  }
  if (target.dataset.confirm) {
    const dialog = target.closest(".sk-confirm-dialog");
    dialog.hidden = true;
    $("#overlay").hidden = !state.data.modal;
    if (target.dataset.confirm === "yes") act(dialog.parentElement.querySelector("[data-has-confirm]")).catch(report);
    return;
  }
  if (target.dataset.hasConfirm) {
    target.parentElement.querySelector(".sk-confirm-dialog").hidden = false;
    $("#overlay").hidden = false;
    return;
  }
  if (target.classList.contains("sk-view-submit")) { submitModal().catch(report); return; }
  if (target.classList.contains("sk-view-close")) { closeModal().catch(report); return; }
  if (target.dataset.actionId) act(target).catch(report);
});

function report(error) { say(String(error)); }

async function start() {
  const { people } = await api("/sandbox/api/people");
  const select = $("#acting-as");
  for (const person of people) {
    const option = document.createElement("option");
    option.value = person.id;
    option.textContent = person.outsider
      ? `${person.name} (outsider)`
      : `${person.name} (${person.groups.join(", ")})`;
    select.appendChild(option);
  }
  const wanted = new URLSearchParams(location.search).get("as");
  if (wanted && people.some((p) => p.id === wanted)) select.value = wanted;
  state.user = select.value;
  select.addEventListener("change", () => {
    state.user = select.value;
    state.version = "";
    if (state.conversation === "home") api("/sandbox/api/home", { user: state.user }).catch(report);
    refresh(true).catch(report);
  });
  await refresh(true);
  document.body.dataset.ready = "1";
  setInterval(() => refresh(false).catch(report), POLL_MS);
}

start().catch(report);
