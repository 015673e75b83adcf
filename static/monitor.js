// Monitor page: take the monitor token from the link (#token=...) and keep it for the tab.
(function () {
  const hash = new URLSearchParams(location.hash.slice(1));
  if (hash.get("token")) {
    sessionStorage.setItem("airclass.monitor_token", hash.get("token"));
    history.replaceState(null, "", location.pathname + location.search);
  }
})();
