// Projector join screen: Korean / English strings (the code and QR come from the server).
AirI18n.register({
  ko: { "p.title": "수업에 참여하세요", "p.scan": "휴대폰으로 QR 코드를 찍거나 아래 주소로 들어가서", "p.enter": "참여 코드를 입력하세요" },
  en: { "p.title": "Join the class", "p.scan": "Scan the QR code with your phone, or go to", "p.enter": "and enter the code" },
});
