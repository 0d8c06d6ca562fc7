/* Test application frontend: shows the portal configuration from /api/v1/config. */
(function () {
  'use strict';
  // Runs once the page is parsed.
  document.addEventListener('DOMContentLoaded', function () {
    var target = document.getElementById('config');
    if (!target || !window.fetch) {
      return;
    }
    fetch('/api/v1/config')
      .then(function (r) { return r.json(); })
      .then(function (cfg) { target.textContent = JSON.stringify(cfg, null, 2); })
      .catch(function () { target.textContent = 'config unavailable'; });
  });
})();
