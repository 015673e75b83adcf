// ICE restart of a WHEP or WHIP session over its URL (RFC 9725 section 4.3): new ICE
// credentials and candidates to the node in a PATCH (If-Match: *), its new ones back in
// the 200; DTLS, SRTP and the session stay. For a path that died under a live session
// (a phone moving from Wi-Fi to LTE): media is back within a round trip of the new path.
window.AirIceRestart = async function restartIce(peer, url) {
  const gathered = new Promise((resolve) => {  // the new generation's candidates
    const done = (ev) => { if (!ev.candidate) { peer.removeEventListener("icecandidate", done); resolve(); } };
    peer.addEventListener("icecandidate", done);
    setTimeout(resolve, 2000);
  });
  peer.restartIce();
  await peer.setLocalDescription(await peer.createOffer({ iceRestart: true }));
  await gathered;
  const pick = (sdp, key) => (sdp.match(new RegExp("a=" + key + ":(.*)\r\n")) || [])[1];
  const local = peer.localDescription.sdp;
  const first = local.split(/\r\n(?=m=)/)[1] || "";  // the first media section (bundled)
  const fragment = [
    "a=ice-ufrag:" + pick(local, "ice-ufrag"), "a=ice-pwd:" + pick(local, "ice-pwd"),
    "m=" + first.slice(2, first.indexOf(" ")) + " 9 UDP/TLS/RTP/SAVPF 0", "a=mid:" + pick(first, "mid"),
    ...first.split("\r\n").filter((l) => l.startsWith("a=candidate:")), "a=end-of-candidates", "",
  ].join("\r\n");
  const res = await fetch(url, {
    method: "PATCH", body: fragment,
    headers: { "Content-Type": "application/trickle-ice-sdpfrag", "If-Match": "*" },
  });
  if (res.status !== 200) {
    const err = new Error("ICE restart " + res.status);
    err.status = res.status;
    throw err;
  }
  const answer = await res.text();
  if (peer.signalingState === "closed") return;
  const theirs = answer.split("\r\n").filter((l) => l.startsWith("a=candidate:")).map((l) => l + "\r\n");
  const sdp = peer.remoteDescription.sdp
    .replace(/a=ice-ufrag:.*\r\n/g, "a=ice-ufrag:" + pick(answer, "ice-ufrag") + "\r\n")
    .replace(/a=ice-pwd:.*\r\n/g, "a=ice-pwd:" + pick(answer, "ice-pwd") + "\r\n")
    .replace(/a=(candidate:.*|end-of-candidates)\r\n/g, "")
    .replace(/(a=mid:.*\r\n)/g, "$1" + theirs.join(""));
  await peer.setRemoteDescription({ type: "answer", sdp });
};
