// Client-side search of the offline docs site: search.js (written by tools/build_docs.py) sets SITE_SEARCH to one
// entry per section {p: page title, s: section, h: href, x: text}. A plain script, no fetch: works from file://.
(function () {
  var input = document.getElementById('site-search'), out = document.getElementById('search-results');
  if (!input || !out || !window.SITE_SEARCH) return;
  function esc(s) { return s.replace(/[&<>"]/g, function (c) { return {'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;'}[c]; }); }
  function run() {
    var words = input.value.toLowerCase().split(/\s+/).filter(function (w) { return w.length > 1; });
    if (!words.length) { out.innerHTML = ''; return; }
    var hits = [];
    window.SITE_SEARCH.forEach(function (e) {
      var head = (e.s + ' ' + e.p).toLowerCase(), body = e.x.toLowerCase(), score = 0;
      for (var i = 0; i < words.length; i++) {
        var inHead = head.indexOf(words[i]) >= 0, inBody = body.indexOf(words[i]) >= 0;
        if (!inHead && !inBody) return;
        score += inHead ? 3 : 1;
      }
      hits.push([score, e]);
    });
    hits.sort(function (a, b) { return b[0] - a[0]; });
    out.innerHTML = hits.length ? hits.slice(0, 25).map(function (h) {
      var e = h[1];
      return '<li><a href="' + esc(e.h) + '">' + esc(e.s) + '</a><br><span class="where">' + esc(e.p) + '</span></li>';
    }).join('') : '<li class="where">no match</li>';
  }
  input.addEventListener('input', run);
  var q = new URLSearchParams(window.location.search).get('q');   // page.html?q=words opens with those results
  if (q) { input.value = q; run(); }
})();
