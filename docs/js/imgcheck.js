// Records on <body> how many of the page's images loaded ("loaded/total"), for the
// headless-browser check of the built site (tests/test_site.py).
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute("data-images-loaded", ok + "/" + imgs.length);
});
