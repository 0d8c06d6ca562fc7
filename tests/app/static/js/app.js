/*! mediacms-test-app build MEDIACMS_BUILD_ID=none */
(function () {
'use strict';
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
