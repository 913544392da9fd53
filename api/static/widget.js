/* related-articles sidebar widget: fills every <div data-related-article="ID"> with
   GET {endpoint}/v1/articles/ID/related.html. Endpoint: the div's (or this script tag's)
   data-related-endpoint, else where this script was loaded from. Optional data-related-limit.
   On any error the div is left empty. No framework, no globals. */
(function () {
  "use strict";
  var script = document.currentScript;
  var own = script && script.src ? script.src.replace(/[?#].*$/, "").replace(/\/[^\/]*$/, "") : "";

  function endpoint(div) {
    var base = div.getAttribute("data-related-endpoint") ||
      (script && script.getAttribute("data-related-endpoint")) || own;
    return base.replace(/\/+$/, "");
  }

  function fill(div) {
    var id = div.getAttribute("data-related-article");
    if (!id || div.getAttribute("data-related-state")) return;
    div.setAttribute("data-related-state", "loading");
    var limit = div.getAttribute("data-related-limit");
    var url = endpoint(div) + "/v1/articles/" + encodeURIComponent(id) + "/related.html" +
      (limit ? "?limit=" + encodeURIComponent(limit) : "");
    var done = function (html, state) {
      div.innerHTML = html;
      div.setAttribute("data-related-state", state);
    };
    fetch(url, { credentials: "omit" })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.text();
      })
      .then(function (html) { done(html, "done"); }, function () { done("", "error"); });
  }

  function run() {
    var divs = document.querySelectorAll("div[data-related-article]");
    for (var i = 0; i < divs.length; i++) fill(divs[i]);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", run);
  else run();
})();
