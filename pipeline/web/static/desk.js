// The desk page: upload with a progress bar, then poll the intake job until the receipt is ready.
(function () {
  "use strict";
  var form = document.getElementById("desk-form");
  if (form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var bar = document.getElementById("upload-progress");
      var xhr = new XMLHttpRequest();
      bar.hidden = false;
      xhr.upload.onprogress = function (e) { if (e.lengthComputable) { bar.value = 100 * e.loaded / e.total; } };
      xhr.onload = function () {
        if (xhr.status < 400 && xhr.responseURL) { window.location = xhr.responseURL; return; }
        document.open(); document.write(xhr.responseText); document.close();
      };
      xhr.onerror = function () { alert("Không gửi được tệp; vui lòng thử lại."); bar.hidden = true; };
      xhr.open("POST", form.action);
      xhr.send(new FormData(form));
    });
  }
  var job = document.getElementById("job");
  if (!job || job.dataset.status === "done" || job.dataset.status === "failed") { return; }
  function show(id, on) { document.getElementById(id).hidden = !on; }
  function text(id, value) { document.getElementById(id).textContent = value == null ? "" : value; }
  function poll() {
    fetch(job.dataset.statusUrl, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.json(); })
      .then(function (s) {
        text("elapsed", Math.round(s.elapsed_s));
        if (s.status === "failed") {
          show("job-running", false); show("job-failed", true);
          text("job-failed", s.error ? s.error.message_vi : "Lỗi"); return;
        }
        if (s.status !== "done") { setTimeout(poll, 1000); return; }
        window.location.reload();  // the receipt, rendered by the server
      })
      .catch(function () { setTimeout(poll, 2000); });
  }
  setTimeout(poll, 500);
})();
