// Renders /api/openapi.json as a readable list of operations; text only through textContent.
"use strict";

(() => {
  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function schemaText(schema, spec) {
    if (!schema) return "";
    const name = schema.$ref ? schema.$ref.split("/").pop() : null;
    const resolved = name ? spec.components.schemas[name] : schema;
    return (name ? `${name}\n` : "") + JSON.stringify(resolved, null, 2);
  }

  function operation(path, method, op, spec) {
    const box = el("details", "api-op");
    box.id = `${method}-${path}`.replace(/[^a-zA-Z0-9-]/g, "-");
    const summary = el("summary");
    summary.append(el("span", `api-method ${method}`, method), el("span", "api-path", path), el("span", "muted", op.summary || ""));
    const body = el("div", "body");
    const params = op.parameters || [];
    if (params.length) {
      body.append(el("h3", "", "Parameters"));
      const list = el("ul");
      for (const p of params) {
        const type = p.schema?.type ? ` (${[].concat(p.schema.type).join(" or ")})` : "";
        list.append(el("li", "", `${p.name} in ${p.in}${p.required ? ", required" : ""}${type}: ${p.description || ""}`));
      }
      body.append(list);
    }
    if (op.requestBody) {
      body.append(el("h3", "", "Request body"));
      for (const [media, content] of Object.entries(op.requestBody.content || {})) {
        body.append(el("p", "muted", media), el("pre", "", schemaText(content.schema, spec)));
      }
    }
    body.append(el("h3", "", "Responses"));
    const responses = el("ul");
    for (const [code, response] of Object.entries(op.responses || {})) {
      const media = Object.keys(response.content || {}).join(", ");
      responses.append(el("li", "", `${code}: ${response.description}${media ? ` (${media})` : ""}`));
    }
    body.append(responses);
    box.append(summary, body);
    return box;
  }

  async function render() {
    const target = document.getElementById("api-operations");
    try {
      const response = await fetch("/api/openapi.json", { headers: { Accept: "application/json" } });
      const spec = await response.json();
      document.getElementById("api-title").textContent = `${spec.info.title} ${spec.info.version}`;
      document.getElementById("api-description").textContent = spec.info.description || "";
      for (const [path, item] of Object.entries(spec.paths)) {
        for (const [method, op] of Object.entries(item)) target.append(operation(path, method, op, spec));
      }
    } catch (error) {
      target.append(el("p", "alert alert-error", `The description could not be loaded: ${error.message}`));
    }
  }

  document.addEventListener("DOMContentLoaded", render);
})();
