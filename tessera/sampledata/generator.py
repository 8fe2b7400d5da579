"""Deterministic, realistic multi-source sample data for Tessera.

``generate(out_dir, contacts, seed, as_of)`` writes what a mid-sized Italian
retailer with Polish customers would really hand to a customer-data platform:

* ``crm/crm_contacts_YYYYMMDD.csv`` - an export of a legacy Italian CRM:
  ``;``-separated, minimal quoting, **Windows-1252**, CRLF line endings, Italian
  column names and ``dd/mm/yyyy`` dates.  cp1252 cannot represent Polish letters
  such as ł, ą, ś, ż, ź, ć, ń, ę, so the CRM stores them transliterated
  (``Łukasz Wójcik`` -> ``Lukasz Wójcik``; ``ó`` *is* in cp1252 and stays, as do
  the Italian accents à è é ì ò ù).  That is exactly what such systems do and it
  is why the same person has *different* names in the CRM and in the ERP: name
  matching must normalise diacritics.  About 1 % of addresses carry a second line
  inside a quoted field, so physical lines outnumber records.
* ``erp/erp_contacts_YYYYMMDD.xml`` - the ERP's B2C customer registry in the
  Sendero ``<sincronizza>`` layout, UTF-8, full diacritics, empty tags kept when a
  value is missing.  Names and addresses are wrapped in CDATA (like the
  ``descrizione`` of the Sendero seed files); every other value is XML-escaped.
* ``ecommerce/{ordini,dettaglio-ordini,prodotti,linee-prodotti-macro,
  linee-prodotti-micro}_YYYYMMDD.xml`` - the e-commerce tables, also Sendero
  layout.  Only ERP customers buy; ``idCliente`` is the ERP ``idgestionale``;
  ``importo`` is the exact sum of its lines (computed in integer cents).
* ``web/web_events_YYYYMMDD.jsonl`` - web/e-mail tracking events keyed by e-mail.
* ``crm/crm_notes_YYYYMMDD.csv`` and ``crm/crm_tasks_YYYYMMDD.csv`` - CRM annotations on
  the CRM's contacts (see ``tessera.sampledata.crm``).
* ``email/bounces_YYYYMMDD.csv`` and ``email/unsubscribes_YYYYMMDD.csv`` - ESP
  feedback files (UTF-8, comma).
* ``marketing/campaign_costs_YYYYMMDD.csv`` - spend per campaign, channel and month, for
  ROAS (UTF-8, comma; no personal data).
* ``email/messages_YYYYMMDD.csv``, ``mobile/app_events_YYYYMMDD.csv`` and
  ``crm/crm_details_YYYYMMDD.csv`` - messages with delivery status codes, the shop app's
  events and key/value details (see ``tessera.sampledata.contact_data``).
* ``b2b/aziende_*.csv``, ``b2b/aziende-crm_*.xml``, ``b2b/utenti-aziende_*.csv`` and
  ``b2b/aziende-potenziali_*.csv`` - the B2B registries (see ``tessera.sampledata.b2b``).

Every element / record starts on its own physical line so that a "line number"
is well defined for every record in every file.  (Beware when checking XML line
numbers with lxml: libxml2 reports ``sourceline`` off by one beyond line 65535;
the numbers in ``bad_rows.csv`` are the true physical lines.)

Identity-resolution difficulty is deliberate: CRM e-mails are sometimes upper
case or padded with spaces, 8 % of people known to both systems have an *old*
e-mail in the CRM (only fuzzy name/phone/birth-date matching can link them),
phones are formatted differently per source, CRM names have typos or are ALL
CAPS, and ~5 % of CRM people have a second CRM record (same e-mail, other case).

Each data file also contains a few *bad rows* (invalid e-mail, impossible date,
missing id, wrong field count, non-numeric amount, truncated JSON, values outside
the allowed set ...).  They are extra records - never a replacement of a real one -
placed at deterministic positions; ids are assigned in file order, so bad rows
consume ids of the sequence too (a row whose id is "missing" leaves a gap).

The ground truth is written beside the data in ``out_dir/_truth/`` (outside any
landing glob): ``records.csv`` (which good contact record belongs to which real
person), ``bad_rows.csv`` (file, 1-based physical line where the record starts,
canonical field, problem keyword) and ``persons.csv``.

Performance: Faker (it_IT / pl_PL, seeded) is used only to build small pools of
names and streets once; everything per person is drawn with a seeded
``numpy.random.Generator`` and assembled with vectorised polars string
expressions, chunk by chunk (``_CHUNK`` persons), and appended to the files.
One million contacts take well under two minutes with bounded memory.  Output
is byte-identical for the same ``(contacts, seed, as_of)``.
"""
from __future__ import annotations

import json
import random
import unicodedata
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import polars as pl
from faker import Faker

from tessera.sampledata.b2b import generate_b2b
from tessera.sampledata.seeds import plant_seed_examples
from tessera.sampledata.crm import generate_annotations

__all__ = ["generate"]

_CHUNK = 100_000
_BAD_RATE = 0.002  # per bad-row kind, relative to the good records of the file
_PL_SHARE = 0.20
_EPOCH = date(1970, 1, 1)

# --------------------------------------------------------------------------- #
# Fixed reference data
# --------------------------------------------------------------------------- #
# (city, province, first CAP, last CAP, cadastral (Belfiore) code, weight)
_IT_CITIES = [
    ("Roma", "RM", 118, 199, "H501", 28), ("Milano", "MI", 20121, 20162, "F205", 14),
    ("Napoli", "NA", 80121, 80147, "F839", 10), ("Torino", "TO", 10121, 10156, "L219", 9),
    ("Palermo", "PA", 90121, 90151, "G273", 6), ("Genova", "GE", 16121, 16167, "D969", 6),
    ("Bologna", "BO", 40121, 40141, "A944", 5), ("Firenze", "FI", 50121, 50145, "D612", 5),
    ("Bari", "BA", 70121, 70132, "A662", 4), ("Catania", "CT", 95121, 95131, "C351", 4),
    ("Venezia", "VE", 30121, 30176, "L736", 3), ("Verona", "VR", 37121, 37142, "L781", 3),
    ("Padova", "PD", 35121, 35143, "G224", 3), ("Trieste", "TS", 34121, 34151, "L424", 2),
    ("Brescia", "BS", 25121, 25136, "B157", 2), ("Cagliari", "CA", 9100, 9100, "B354", 2),
    ("Perugia", "PG", 6121, 6135, "G478", 2), ("Parma", "PR", 43121, 43126, "G337", 2),
    ("Modena", "MO", 41121, 41126, "F257", 2), ("Salerno", "SA", 84121, 84135, "H703", 2),
    ("Bergamo", "BG", 24121, 24129, "A794", 2), ("Pisa", "PI", 56121, 56128, "G702", 1),
    ("Ancona", "AN", 60121, 60131, "A271", 1), ("Pescara", "PE", 65121, 65129, "G482", 1),
    ("Lecce", "LE", 73100, 73100, "E506", 1), ("Latina", "LT", 4100, 4100, "E472", 1),
    ("Frosinone", "FR", 3100, 3100, "D810", 1), ("Viterbo", "VT", 1100, 1100, "M082", 1),
    ("Rieti", "RI", 2100, 2100, "H282", 1), ("Terni", "TR", 5100, 5100, "L117", 1),
    ("Sassari", "SS", 7100, 7100, "I452", 1), ("Nuoro", "NU", 8100, 8100, "F979", 1),
    ("Aosta", "AO", 11100, 11100, "A326", 1), ("L'Aquila", "AQ", 67100, 67100, "A345", 1),
    ("Potenza", "PZ", 85100, 85100, "G942", 1), ("Udine", "UD", 33100, 33100, "L483", 1),
    ("Trento", "TN", 38121, 38123, "L378", 1), ("Bolzano", "BZ", 39100, 39100, "A952", 1),
    ("Como", "CO", 22100, 22100, "C933", 1), ("Siena", "SI", 53100, 53100, "I726", 1),
    ("Reggio Calabria", "RC", 89121, 89135, "H224", 1), ("Forlì", "FC", 47121, 47122, "D704", 1),
    ("Cantù", "CO", 22063, 22063, "B639", 1),
]
# (city, first postcode prefix, last prefix, weight); province left empty for PL
_PL_CITIES = [
    ("Warszawa", 0, 4, 20), ("Kraków", 30, 31, 9), ("Łódź", 90, 94, 7), ("Wrocław", 50, 54, 7),
    ("Poznań", 60, 61, 6), ("Gdańsk", 80, 80, 5), ("Szczecin", 70, 71, 4), ("Bydgoszcz", 85, 85, 4),
    ("Lublin", 20, 20, 4), ("Białystok", 15, 15, 3), ("Katowice", 40, 40, 3), ("Gdynia", 81, 81, 3),
    ("Częstochowa", 42, 42, 2), ("Radom", 26, 26, 2), ("Toruń", 87, 87, 2), ("Rzeszów", 35, 35, 2),
    ("Kielce", 25, 25, 2), ("Olsztyn", 10, 10, 2), ("Opole", 45, 45, 1), ("Zielona Góra", 65, 65, 1),
    ("Bielsko-Biała", 43, 43, 1), ("Gorzów Wielkopolski", 66, 66, 1),
]
_IT_DOMAINS = [("gmail.com", 35), ("libero.it", 15), ("hotmail.it", 10), ("yahoo.it", 8),
               ("outlook.com", 8), ("alice.it", 6), ("virgilio.it", 6), ("tiscali.it", 4),
               ("icloud.com", 4), ("fastwebnet.it", 4)]
_PL_DOMAINS = [("gmail.com", 30), ("wp.pl", 20), ("onet.pl", 15), ("o2.pl", 12),
               ("interia.pl", 10), ("outlook.com", 8), ("yahoo.com", 5)]
_OLD_DOMAINS_IT = ["tin.it", "libero.it", "tiscali.it", "virgilio.it", "alice.it", "hotmail.com"]
_OLD_DOMAINS_PL = ["poczta.onet.pl", "interia.eu", "wp.pl", "go2.pl", "o2.pl"]
_IT_MOBILE = [320, 324, 327, 328, 329, 330, 331, 333, 334, 335, 336, 338, 339, 340, 342, 345,
              346, 347, 348, 349, 351, 366, 371, 377, 380, 388, 389, 391, 392, 393]
_PL_MOBILE = [p for lo, hi in ((500, 519), (530, 539), (570, 579), (600, 609), (660, 669),
                               (690, 699), (720, 739), (780, 799), (880, 889)) for p in range(lo, hi + 1)]
_ADDR_SECOND_LINE = ["Scala B", "Scala A int. 7", "Interno 4", "c/o Studio Bianchi", "Piano 3",
                     "Palazzina C"]

_MACRO = [(1, "Abbigliamento"), (2, "Calzature"), (3, "Smartphone"), (4, "Elettronica"),
          (5, "Accessori")]
_MICRO = [(10, 1, "MAGLIERIA"), (11, 1, "PANTALONI"), (12, 1, "GIACCHE E CAPPOTTI"),
          (13, 3, "SMARTPHONE IPHONE"), (14, 3, "SMARTPHONE ANDROID"), (15, 2, "SNEAKERS"),
          (16, 2, "SCARPE ELEGANTI"), (17, 4, "NOTEBOOK"), (18, 4, "TABLET"),
          (19, 4, "AUDIO"), (20, 5, "BORSE"), (21, 5, "OROLOGI")]
# Services and their lines ("servizi", "linee-servizi-*"), and the offers orders name.
_SERVICE_MACRO = [(1, "Logistica"), (2, "Assistenza")]
_SERVICE_MICRO = [(10, 1, "CONSEGNA"), (11, 1, "RESO"), (20, 2, "INSTALLAZIONE"),
                  (21, 2, "GARANZIA")]
_SERVICES = [(501, "CONSEGNA EXPRESS 24H", 10), (502, "CONSEGNA AL PIANO", 10),
             (503, "RITIRO USATO", 11), (504, "INSTALLAZIONE A DOMICILIO", 20),
             (505, "ESTENSIONE GARANZIA 2 ANNI", 21)]
_OFFERS = [(i, d, f"01/{i:02d}/2026", f"28/{i:02d}/2026") for i, d in enumerate([
    "SCONTO 10% PER ORDINI SUPERIORI A 100 EUR", "SPEDIZIONE GRATUITA", "SALDI INVERNALI -30%",
    "PRENDI 3 PAGHI 2", "SCONTO FEDELTA 15%", "BUONO 20 EUR", "FESTA DELLA MAMMA -20%",
    "BLACK FRIDAY -40%", "SCONTO BENVENUTO 10%", "OUTLET -50%", "SCONTO COMPLEANNO 15%",
    "NATALE REGALO OMAGGIO"], start=1)]
# (idProdotto, descrizione, micro line, list price in cents, popularity weight)
_PRODUCTS = [
    (301, "MAGLIONE LANA MERINO", 10, 7990, 5), (302, "FELPA CAPPUCCIO", 10, 4990, 8),
    (303, "T-SHIRT COTONE BIO", 10, 1990, 12), (304, "CARDIGAN CASHMERE", 10, 14900, 2),
    (305, "JEANS SLIM FIT", 11, 5990, 9), (306, "CHINO STRETCH", 11, 4590, 5),
    (307, "PANTALONE LINO", 11, 3990, 3), (308, "PIUMINO LEGGERO", 12, 12900, 4),
    (309, "TRENCH DONNA", 12, 18900, 2), (310, "GIUBBOTTO PELLE", 12, 29900, 1),
    (311, "PARKA IMPERMEABILE", 12, 15900, 2), (320, "SNEAKERS RUNNING", 15, 8990, 8),
    (321, "SNEAKERS BIANCHE PELLE", 15, 11900, 6), (322, "SNEAKERS SLIP-ON", 15, 5990, 3),
    (323, "MOCASSINI CUOIO", 16, 13900, 2), (324, "DECOLLETE TACCO 8", 16, 9990, 2),
    (325, "STIVALETTI CHELSEA", 16, 14900, 2), (340, "IPHONE 15 128GB", 13, 87900, 2),
    (341, "IPHONE 14 128GB", 13, 72900, 2), (342, "IPHONE SE", 13, 52900, 2),
    (345, "IPHONE6", 13, 29900, 1), (346, "GALAXY S24", 14, 89900, 2),
    (347, "GALAXY A55", 14, 44900, 3), (348, "PIXEL 8", 14, 69900, 1),
    (349, "REDMI NOTE 13", 14, 24900, 3), (360, "NOTEBOOK 14 POLLICI", 17, 79900, 2),
    (361, "ULTRABOOK 13 POLLICI", 17, 119900, 1), (362, "CHROMEBOOK", 17, 34900, 1),
    (363, "TABLET 11 POLLICI", 18, 44900, 2), (364, "TABLET 8 POLLICI", 18, 19900, 2),
    (365, "CUFFIE BLUETOOTH ANC", 19, 24900, 3), (366, "AURICOLARI TRUE WIRELESS", 19, 12900, 5),
    (367, "SPEAKER PORTATILE", 19, 8990, 3), (380, "BORSA SHOPPER PELLE", 20, 15900, 3),
    (381, "ZAINO URBAN", 20, 6990, 4), (382, "PORTAFOGLIO UOMO", 20, 3990, 5),
    (383, "CINTURA PELLE", 20, 2990, 6), (384, "OROLOGIO CRONOGRAFO", 21, 19900, 2),
    (385, "SMARTWATCH SPORT", 21, 24900, 3), (386, "OROLOGIO SOLO TEMPO", 21, 9900, 2),
]

_EVENT_TYPES = [("page_view", 60), ("email_open", 12), ("email_click", 7), ("download", 5),
                ("form_fill", 5), ("cart", 11)]
_DEVICES = [("mobile", "Android", "Chrome", 30), ("mobile", "iOS", "Safari", 22),
            ("desktop", "Windows", "Chrome", 20), ("desktop", "Windows", "Edge", 8),
            ("desktop", "macOS", "Safari", 8), ("desktop", "Linux", "Firefox", 3),
            ("tablet", "iPadOS", "Safari", 6), ("tablet", "Android", "Chrome", 3)]
_FORMS = ["newsletter", "contatti", "preventivo", "registrazione"]
_DOWNLOADS = ["catalogo-autunno-inverno.pdf", "guida-taglie.pdf", "listino-prezzi.pdf"]

_CRM_HEADER = ("crm_id;nome;cognome;email;cellulare;data_nascita;sesso;indirizzo;cap;citta;"
               "provincia;paese;codice_fiscale;consenso_email;data_modifica;livello_fedelta;proprietario")
_CRM_COLS = _CRM_HEADER.split(";")
_ERP_FIELDS = ["idgestionale", "nome", "cognome", "email", "telefonocellulare", "telefonofisso",
               "indirizzo", "cap", "citta", "provinciaiso", "paeseiso", "datanascita", "sesso",
               "codicefiscale", "datamodifica"]
_CDATA_FIELDS = {"nome", "cognome", "indirizzo", "descrizione"}
_ORDER_FIELDS = ["idOrdine", "idCanaleMacro", "idCanaleMicro", "data", "importo", "idCliente",
                 "idOfferta"]
_DETAIL_FIELDS = ["idDettaglioOrdine", "idOrdine", "idProdotto", "idServizio", "quantita", "prezzo"]

# --------------------------------------------------------------------------- #
# Text helpers
# --------------------------------------------------------------------------- #
_PL_TRANSLIT = str.maketrans({
    "ł": "l", "Ł": "L", "ą": "a", "Ą": "A", "ę": "e", "Ę": "E", "ś": "s", "Ś": "S", "ć": "c",
    "Ć": "C", "ń": "n", "Ń": "N", "ż": "z", "Ż": "Z", "ź": "z", "Ź": "Z",
})


def _to_cp1252(text: str) -> str:
    """Transliterate what Windows-1252 cannot encode (Polish letters), keep the rest."""
    text = text.translate(_PL_TRANSLIT)
    try:
        text.encode("cp1252")
        return text
    except UnicodeEncodeError:
        out = []
        for ch in text:
            try:
                ch.encode("cp1252")
                out.append(ch)
            except UnicodeEncodeError:
                base = "".join(c for c in unicodedata.normalize("NFKD", ch)
                               if not unicodedata.combining(c))
                out.append(base if base and all(_enc_ok(c) for c in base) else "?")
        return "".join(out)


def _enc_ok(ch: str) -> bool:
    try:
        ch.encode("cp1252")
        return True
    except UnicodeEncodeError:
        return False


def _ascii(text: str) -> str:
    text = text.translate(_PL_TRANSLIT)
    return "".join(c for c in unicodedata.normalize("NFKD", text) if ord(c) < 128)


def _slug(text: str) -> str:
    return "".join(c for c in _ascii(text).lower() if c.isalnum())


def _cf_part(name: str, first_name: bool) -> str:
    letters = [c for c in _ascii(name).upper() if "A" <= c <= "Z"]
    cons = [c for c in letters if c not in "AEIOU"]
    vows = [c for c in letters if c in "AEIOU"]
    if first_name and len(cons) >= 4:
        cons = [cons[0], cons[2], cons[3]]
    # The codice fiscale rule: consonants, then vowels, padded with X to three letters.
    return ("".join(cons + vows) + "XXX")[:3]


_CF_ODD = np.zeros(256, dtype=np.int64)
_CF_EVEN = np.zeros(256, dtype=np.int64)
for _i, _v in enumerate([1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3, 6, 8, 12, 14,
                         16, 10, 22, 25, 24, 23]):
    _CF_ODD[ord("A") + _i] = _v
    _CF_EVEN[ord("A") + _i] = _i
    if _i < 10:
        _CF_ODD[ord("0") + _i] = _v
        _CF_EVEN[ord("0") + _i] = _i


def _cf_check(cf15: pl.Series) -> pl.Series:
    """Vectorised codice-fiscale check character for 15-character ASCII strings."""
    if len(cf15) == 0:
        return pl.Series([], dtype=pl.String)
    raw = np.frombuffer("".join(cf15.to_list()).encode("ascii"), dtype=np.uint8).reshape(-1, 15)
    total = _CF_ODD[raw[:, 0::2]].sum(axis=1) + _CF_EVEN[raw[:, 1::2]].sum(axis=1)
    letters = (total % 26 + ord("A")).astype(np.uint8)
    return pl.Series(list(letters.tobytes().decode("ascii")), dtype=pl.String)


def _csv_quote(value: str, sep: str) -> str:
    if any(c in value for c in (sep, '"', "\n", "\r")):
        return '"' + value.replace('"', '""') + '"'
    return value


def _csv_line(values, sep: str) -> str:
    return sep.join(_csv_quote(str(v), sep) for v in values)


def _quote_expr(name: str, sep: str) -> pl.Expr:
    col = pl.col(name)
    return (pl.when(col.str.contains(f"[{sep}\"\r\n]"))
            .then(pl.lit('"') + col.str.replace_all('"', '""', literal=True) + pl.lit('"'))
            .otherwise(col))


def _xml_escape_expr(name: str) -> pl.Expr:
    return (pl.col(name).str.replace_all("&", "&amp;", literal=True)
            .str.replace_all("<", "&lt;", literal=True).str.replace_all(">", "&gt;", literal=True))


def _xml_value(field: str, value: str) -> str:
    if field in _CDATA_FIELDS and value:
        return "<![CDATA[" + value.replace("]]>", "]]]]><![CDATA[>") + "]]>"
    return escape(value)


def _xml_block(tag: str, fields: list[str], values: dict) -> str:
    inner = "\n".join(f"<{f}>{_xml_value(f, str(values.get(f, '')))}</{f}>" for f in fields)
    return f"<{tag}>\n{inner}\n</{tag}>"


def _xml_block_expr(tag: str, fields: list[str]) -> pl.Expr:
    parts: list[pl.Expr] = [pl.lit(f"<{tag}>\n")]
    for f in fields:
        if f in _CDATA_FIELDS:
            val = (pl.when(pl.col(f) == "").then(pl.lit(""))
                   .otherwise(pl.lit("<![CDATA[") + pl.col(f) + pl.lit("]]>")))
        else:
            val = _xml_escape_expr(f)
        parts += [pl.lit(f"<{f}>"), val, pl.lit(f"</{f}>\n")]
    parts.append(pl.lit(f"</{tag}>"))
    return pl.concat_str(parts)


def _zfill(arr, width: int) -> pl.Series:
    return pl.Series(np.asarray(arr, dtype=np.int64)).cast(pl.String).str.zfill(width)


def _str(arr) -> pl.Series:
    return pl.Series(np.asarray(arr, dtype=np.int64)).cast(pl.String)


def _fmt_cents(cents) -> pl.Series:
    cents = np.asarray(cents, dtype=np.int64)
    return _str(cents // 100) + "." + _zfill(cents % 100, 2)


def _pick(rng: np.random.Generator, weighted: list, n: int) -> np.ndarray:
    w = np.array([x[-1] for x in weighted], dtype=float)
    return rng.choice(len(weighted), size=n, p=w / w.sum())


def _days_to_str(days, fmt: str) -> pl.Series:
    return pl.Series(np.asarray(days, dtype=np.int32)).cast(pl.Date).dt.strftime(fmt)


def _secs_to_str(secs, fmt: str) -> pl.Series:
    return pl.from_epoch(pl.Series(np.asarray(secs, dtype=np.int64)), time_unit="s").dt.strftime(fmt)


# --------------------------------------------------------------------------- #
# Pools
# --------------------------------------------------------------------------- #
@dataclass
class _Pools:
    fn: pl.Series
    fn_cp: pl.Series
    fn_slug: pl.Series
    fn_cf: pl.Series
    fn_off: np.ndarray  # segment offsets: IT-M, IT-F, PL-M, PL-F
    fn_len: np.ndarray
    ln: pl.Series
    ln_cp: pl.Series
    ln_slug: pl.Series
    ln_cf: pl.Series
    ln_off: np.ndarray  # IT, PL-M, PL-F
    ln_len: np.ndarray
    st: pl.Series
    st_cp: pl.Series
    st_off: np.ndarray  # IT, PL
    st_len: np.ndarray
    city: pl.Series
    city_cp: pl.Series
    prov: pl.Series
    belfiore: pl.Series
    cap_lo: np.ndarray
    cap_hi: np.ndarray
    domains: pl.Series
    n_it_dom: int


def _series_set(values: list[str]):
    return (pl.Series(values, dtype=pl.String), pl.Series([_to_cp1252(v) for v in values]),
            pl.Series([_slug(v) or "x" for v in values]))


def _build_pools(seed: int) -> _Pools:
    it = Faker("it_IT")
    it.seed_instance(seed)
    pol = Faker("pl_PL")
    pol.seed_instance(seed + 7919)
    fn_segs = [[it.first_name_male() for _ in range(1500)],
               [it.first_name_female() for _ in range(1500)],
               [pol.first_name_male() for _ in range(1500)],
               [pol.first_name_female() for _ in range(1500)]]
    ln_segs = [[it.last_name() for _ in range(3000)],
               [pol.last_name_male() for _ in range(1500)],
               [pol.last_name_female() for _ in range(1500)]]
    prefixes = ["Via"] * 12 + ["Viale"] * 2 + ["Piazza", "Corso", "Corso", "Largo", "Vicolo"]
    it_streets = []
    for _ in range(2000):
        p = prefixes[it.random_int(0, len(prefixes) - 1)]
        name = it.last_name() if it.random_int(0, 1) else f"{it.first_name()} {it.last_name()}"
        it_streets.append(f"{p} {name}")
    pl_pref = ["ul."] * 17 + ["al.", "al.", "pl.", "os."]
    pl_streets = [f"{pl_pref[pol.random_int(0, len(pl_pref) - 1)]} {pol.street_name()}"
                  for _ in range(1000)]

    def offs(segs):
        lens = np.array([len(s) for s in segs], dtype=np.int64)
        return np.concatenate([[0], np.cumsum(lens)[:-1]]), lens

    fn_all = [v for s in fn_segs for v in s]
    ln_all = [v for s in ln_segs for v in s]
    fn, fn_cp, fn_slug = _series_set(fn_all)
    ln, ln_cp, ln_slug = _series_set(ln_all)
    st, st_cp, _ = _series_set(it_streets + pl_streets)
    cities = [c[0] for c in _IT_CITIES] + [c[0] for c in _PL_CITIES]
    city, city_cp, _ = _series_set(cities)
    cap_lo = np.array([c[2] for c in _IT_CITIES] + [c[1] * 1000 for c in _PL_CITIES])
    cap_hi = np.array([c[3] for c in _IT_CITIES] + [c[2] * 1000 + 999 for c in _PL_CITIES])
    return _Pools(
        fn=fn, fn_cp=fn_cp, fn_slug=fn_slug, fn_cf=pl.Series([_cf_part(v, True) for v in fn_all]),
        fn_off=offs(fn_segs)[0], fn_len=offs(fn_segs)[1],
        ln=ln, ln_cp=ln_cp, ln_slug=ln_slug, ln_cf=pl.Series([_cf_part(v, False) for v in ln_all]),
        ln_off=offs(ln_segs)[0], ln_len=offs(ln_segs)[1],
        st=st, st_cp=st_cp, st_off=np.array([0, len(it_streets)]),
        st_len=np.array([len(it_streets), len(pl_streets)]),
        city=city, city_cp=city_cp,
        prov=pl.Series([c[1] for c in _IT_CITIES] + [""] * len(_PL_CITIES)),
        belfiore=pl.Series([c[4] for c in _IT_CITIES] + ["Z127"] * len(_PL_CITIES)),
        cap_lo=cap_lo, cap_hi=cap_hi,
        domains=pl.Series([d[0] for d in _IT_DOMAINS] + [d[0] for d in _PL_DOMAINS]),
        n_it_dom=len(_IT_DOMAINS),
    )


# --------------------------------------------------------------------------- #
# Bad-row placement and line-tracking writers
# --------------------------------------------------------------------------- #
class _BadPlan:
    """Where the extra bad records go: bad record b is inserted before good record slots[b]."""

    def __init__(self, rng: np.random.Generator, n_good: int, kinds: list[tuple[str, str]]):
        per = max(1, int(round(n_good * _BAD_RATE)))
        order = rng.permutation(len(kinds) * per)
        self.kinds = [kinds[i % len(kinds)] for i in order]
        lo = 1 if n_good >= 1 else 0
        self.slots = np.sort(rng.integers(lo, n_good + 1, size=len(self.kinds)))
        self.n_good = n_good

    def good_pos(self, j: np.ndarray) -> np.ndarray:
        return j + np.searchsorted(self.slots, j, side="right")

    def take(self, g0: int, g1: int, last: bool) -> list[tuple[int, tuple[str, str]]]:
        """Bad records inserted among good records [g0, g1): (global position, kind)."""
        out = []
        for b, s in enumerate(self.slots):
            if g0 <= s < g1 or (last and s >= g1):
                out.append((int(s) + b, self.kinds[b]))
        return out


class _RecordFile:
    def __init__(self, root: Path, rel: str, header: list[str], *, encoding: str = "utf-8",
                 newline: str = "\n", footer: list[str] | None = None):
        self.rel = rel
        self.encoding = encoding
        self.newline = newline
        self.footer = footer or []
        self.path = root / rel
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(self.path, "wb")
        self.line = 1
        self.count = 0
        if header:
            self._raw(header)

    def _raw(self, lines: list[str]) -> None:
        text = self.newline.join(lines) + self.newline
        self.fh.write(text.encode(self.encoding))
        self.line += text.count("\n")

    def write(self, good: pl.Series, good_pos: np.ndarray, bad: list[tuple[int, str, tuple]],
              bad_sink: list) -> None:
        """Merge good texts and bad (pos, text, (field, problem)) by position and append."""
        if len(good) == 0 and not bad:
            return
        texts = pl.concat([good.cast(pl.String), pl.Series([b[1] for b in bad], dtype=pl.String)])
        pos = np.concatenate([np.asarray(good_pos, dtype=np.int64),
                              np.array([b[0] for b in bad], dtype=np.int64)])
        order = np.argsort(pos, kind="stable")
        texts = texts.gather(order)
        nl = texts.str.count_matches("\n", literal=True).to_numpy().astype(np.int64) + 1
        starts = self.line + np.concatenate([[0], np.cumsum(nl)[:-1]])
        n_good = len(good)
        for k in np.nonzero(order >= n_good)[0]:
            field, problem = bad[int(order[k]) - n_good][2]
            bad_sink.append((self.rel, int(starts[k]), field, problem))
        self.line += int(nl.sum())
        self.count += len(texts)
        payload = self.newline.join(texts.to_list()) + self.newline
        self.fh.write(payload.encode(self.encoding))

    def close(self) -> None:
        if self.footer:
            self._raw(self.footer)
        self.fh.close()


def _sendero_header(table: str, container: str) -> list[str]:
    return ['<?xml version="1.0" encoding="UTF-8"?>', "<sincronizza>", "<commons>",
            f"<table>{table}</table>", "</commons>", f"<{container}>"]


def _sendero_footer(container: str) -> list[str]:
    return [f"</{container}>", "</sincronizza>"]


# --------------------------------------------------------------------------- #
# Persons
# --------------------------------------------------------------------------- #
def _unique_emails(emails: list[str], seen: set, pyrng: random.Random) -> list[str]:
    for i, e in enumerate(emails):
        if e in seen:
            local, dom = e.split("@", 1)
            while True:
                cand = f"{local}{pyrng.randint(1, 999)}@{dom}" if pyrng.random() < 0.7 else \
                    f"{local}.{pyrng.randint(1, 9999)}@{dom}"
                if cand not in seen:
                    break
                local = local + str(pyrng.randint(0, 9))
            e = cand
            emails[i] = e
        seen.add(e)
    return emails


def _email_locals(df: pl.DataFrame, fmt: np.ndarray, suffix: pl.Series) -> pl.Series:
    tmp = df.select("fslug", "lslug").with_columns(fmt=pl.Series(fmt), suf=suffix)
    f, l_ = pl.col("fslug"), pl.col("lslug")
    expr = (pl.when(pl.col("fmt") == 0).then(f + "." + l_)
            .when(pl.col("fmt") == 1).then(f + l_)
            .when(pl.col("fmt") == 2).then(f.str.slice(0, 1) + "." + l_)
            .when(pl.col("fmt") == 3).then(f + "_" + l_)
            .otherwise(l_ + "." + f)) + pl.col("suf")
    return tmp.select(expr.alias("x"))["x"]


def _make_persons(P: _Pools, rng: np.random.Generator, pyrng: random.Random, p0: int, n: int,
                  seen: set, old_mask: np.ndarray) -> pl.DataFrame:
    is_pl = rng.random(n) < _PL_SHARE
    fem = rng.random(n) < 0.5
    seg = is_pl.astype(np.int64) * 2 + fem
    fn_i = P.fn_off[seg] + (rng.random(n) * P.fn_len[seg]).astype(np.int64)
    lseg = np.where(is_pl, 1 + fem, 0)
    ln_i = P.ln_off[lseg] + (rng.random(n) * P.ln_len[lseg]).astype(np.int64)
    city_i = np.where(is_pl, len(_IT_CITIES) + _pick(rng, _PL_CITIES, n), _pick(rng, _IT_CITIES, n))
    sseg = is_pl.astype(np.int64)
    st_i = P.st_off[sseg] + (rng.random(n) * P.st_len[sseg]).astype(np.int64)
    civic = _str(np.minimum(rng.geometric(0.04, n), 250))
    apt = _str(rng.integers(1, 80, n))
    has_apt = is_pl & (rng.random(n) < 0.45)
    lo, hi = P.cap_lo[city_i], P.cap_hi[city_i]
    capn = lo + (rng.random(n) * (hi - lo + 1)).astype(np.int64)
    cap = _zfill(capn, 5)
    cap = pl.Series(np.where(is_pl, (cap.str.slice(0, 2) + "-" + cap.str.slice(2)).to_numpy(),
                             cap.to_numpy()), dtype=pl.String)
    d_lo, d_hi = (date(1950, 1, 1) - _EPOCH).days, (date(2006, 12, 31) - _EPOCH).days
    birth = rng.integers(d_lo, d_hi + 1, n)
    it_mob = np.array(_IT_MOBILE)[rng.integers(0, len(_IT_MOBILE), n)]
    pl_mob = np.array(_PL_MOBILE)[rng.integers(0, len(_PL_MOBILE), n)]
    phone = pl.Series(np.where(is_pl, (_str(pl_mob) + _zfill(rng.integers(0, 10**6, n), 6)).to_numpy(),
                               (_str(it_mob) + _zfill(rng.integers(0, 10**7, n), 7)).to_numpy()),
                      dtype=pl.String)
    tier = pl.Series(np.array(["bronze", "silver", "gold"])[rng.choice(3, n, p=[0.6, 0.3, 0.1])])

    df = pl.DataFrame({
        "pidx": np.arange(p0, p0 + n, dtype=np.int64),
        "is_pl": is_pl, "female": fem,
        "fn": P.fn.gather(fn_i), "fn_cp": P.fn_cp.gather(fn_i), "fslug": P.fn_slug.gather(fn_i),
        "ln": P.ln.gather(ln_i), "ln_cp": P.ln_cp.gather(ln_i), "lslug": P.ln_slug.gather(ln_i),
        "street": P.st.gather(st_i), "street_cp": P.st_cp.gather(st_i),
        "civic": civic, "apt": apt, "has_apt": has_apt,
        "cap": cap, "city": P.city.gather(city_i), "city_cp": P.city_cp.gather(city_i),
        "prov": P.prov.gather(city_i), "birth": pl.Series(birth.astype(np.int32)).cast(pl.Date),
        "phone": phone, "tier": tier,
    })
    df = df.with_columns(
        person_id=pl.lit("P") + (pl.col("pidx") + 1).cast(pl.String).str.zfill(7),
        country=pl.when(pl.col("is_pl")).then(pl.lit("PL")).otherwise(pl.lit("IT")),
        gender=pl.when(pl.col("female")).then(pl.lit("F")).otherwise(pl.lit("M")),
    )
    num_tail = pl.when(pl.col("has_apt")).then(pl.lit("/") + pl.col("apt")).otherwise(pl.lit(""))
    df = df.with_columns(
        address=pl.col("street") + " " + pl.col("civic") + num_tail,
        address_cp=pl.col("street_cp") + " " + pl.col("civic") + num_tail,
    )

    # e-mail: name based local part + optional number @ domain, unique per person
    fmt = rng.choice(5, n, p=[0.45, 0.2, 0.12, 0.1, 0.13])
    suf_kind = rng.choice(4, n, p=[0.45, 0.3, 0.15, 0.1])
    yy = df["birth"].dt.year() % 100
    rnd = rng.integers(1, 1000, n)
    suffix = pl.Series(np.where(suf_kind == 0, "", np.where(
        suf_kind == 1, yy.cast(pl.String).str.zfill(2).to_numpy(),
        _str(np.where(suf_kind == 2, rnd % 99 + 1, rnd)).to_numpy())), dtype=pl.String)
    dom_i = np.where(is_pl, P.n_it_dom + _pick(rng, _PL_DOMAINS, n), _pick(rng, _IT_DOMAINS, n))
    emails = (_email_locals(df, fmt, suffix) + "@" + P.domains.gather(dom_i)).to_list()
    df = df.with_columns(email=pl.Series(_unique_emails(emails, seen, pyrng), dtype=pl.String))

    # old e-mail (CRM only) for the flagged persons
    old_idx = np.nonzero(old_mask)[0]
    old = [""] * n
    if len(old_idx):
        sub = df[old_idx]
        fmt2 = (fmt[old_idx] + 1 + rng.integers(0, 4, len(old_idx))) % 5
        suf2 = _str(rng.integers(1, 100, len(old_idx)))
        locs = _email_locals(sub, fmt2, suf2).to_list()
        ispl = is_pl[old_idx]
        di = rng.integers(0, 100, len(old_idx))
        cand = [f"{loc}@{(_OLD_DOMAINS_PL if p else _OLD_DOMAINS_IT)[d % (5 if p else 6)]}"
                for loc, p, d in zip(locs, ispl, di)]
        for k, e in zip(old_idx, _unique_emails(cand, seen, pyrng)):
            old[k] = e
    df = df.with_columns(old_email=pl.Series(old, dtype=pl.String))

    # codice fiscale (plausible, with a correct check character), Italians only
    month_letters = pl.Series(list("ABCDEHLMPRST"))
    cf15 = (P.ln_cf.gather(ln_i) + P.fn_cf.gather(fn_i)
            + (df["birth"].dt.year() % 100).cast(pl.String).str.zfill(2)
            + month_letters.gather((df["birth"].dt.month() - 1).to_numpy())
            + (df["birth"].dt.day().cast(pl.Int64) + pl.Series(fem.astype(np.int64) * 40))
            .cast(pl.String).str.zfill(2)
            + P.belfiore.gather(city_i))
    cf = cf15 + _cf_check(cf15)
    df = df.with_columns(cf=pl.Series(np.where(is_pl, "", cf.to_numpy()), dtype=pl.String))
    return df


# --------------------------------------------------------------------------- #
# Bad-record builders (few rows, plain Python)
# --------------------------------------------------------------------------- #
def _fake(P: _Pools, rng: np.random.Generator) -> dict:
    i = int(rng.integers(0, P.fn_len[0]))
    j = int(rng.integers(0, P.ln_len[0]))
    c = int(rng.integers(0, len(_IT_CITIES)))
    fn, ln = P.fn[i], P.ln[j]
    return {
        "fn": fn, "ln": ln, "fn_cp": P.fn_cp[i], "ln_cp": P.ln_cp[j],
        "email": f"{P.fn_slug[i]}.{P.ln_slug[j]}@gmail.com",
        "phone": f"{_IT_MOBILE[int(rng.integers(0, len(_IT_MOBILE)))]}{int(rng.integers(0, 10**7)):07d}",
        "address": f"{P.st_cp[int(rng.integers(0, P.st_len[0]))]} {int(rng.integers(1, 120))}",
        "cap": f"{int(_IT_CITIES[c][2]):05d}", "city": _IT_CITIES[c][0], "prov": _IT_CITIES[c][1],
        "birth": f"{int(rng.integers(1, 29)):02d}/{int(rng.integers(1, 13)):02d}/{int(rng.integers(1950, 2007))}",
    }


def _bad_crm(P, rng, pos: int, kind: tuple[str, str], mod: str) -> str:
    f = _fake(P, rng)
    row = [f"CRM-{pos + 1:06d}", f["fn_cp"], f["ln_cp"], f["email"], f["phone"], f["birth"], "M",
           f["address"], f["cap"], f["city"], f["prov"], "IT", "", "1", mod, "bronze", ""]
    field, _ = kind
    if field == "email":
        row[3] = "mario.rossi@" if pos % 2 == 0 else "no-at-sign.it"
    elif field == "birth_date":
        row[5] = "31/02/1980"
    elif field == "source_record_id":
        row[0] = ""
    else:  # field_count: one field too few
        row = row[:-1]
    return _csv_line(row, ";")


def _bad_erp(P, rng, pos: int, kind: tuple[str, str], mod: str) -> str:
    f = _fake(P, rng)
    vals = {"idgestionale": f"ERP{100001 + pos}", "nome": f["fn"], "cognome": f["ln"],
            "email": f["email"], "telefonocellulare": "+39" + f["phone"], "telefonofisso": "",
            "indirizzo": f["address"], "cap": f["cap"], "citta": f["city"],
            "provinciaiso": f["prov"], "paeseiso": "IT", "datanascita": f["birth"], "sesso": "F",
            "codicefiscale": "", "datamodifica": mod}
    field = kind[0]
    if field == "source_record_id":
        vals["idgestionale"] = ""
        vals["email"] = ""
    elif field == "birth_date":
        vals["datanascita"] = "1985-13-45"
    else:
        vals["email"] = f["email"].replace("@", "")
    return _xml_block("utente", _ERP_FIELDS, vals)


# --------------------------------------------------------------------------- #
# Main entry point
# --------------------------------------------------------------------------- #
def generate(out_dir: str | Path, contacts: int = 300, seed: int = 42,
             as_of: date = date(2026, 11, 1), journey_events: bool = False, *,
             orders_scale: float = 1.0, events_scale: float = 1.0) -> dict:
    """Write the sample data set into ``out_dir`` and return a summary.

    ``journey_events`` adds ``web/web_events_<day>_journeys.jsonl``: the Milan journey's
    purchases, coupon redemptions and show attendances (:mod:`tessera.sampledata.journeys`),
    and ``web/sms_optins_<day>.csv``: explicit SMS opt-ins of most of those people.
    ``orders_scale`` / ``events_scale`` multiply each person's drawn number of orders and
    of web events (the benchmark's reference proportions: 10 order lines and 50 events per
    contact record); at 1.0 the output is the same as without them.

    Returns ``{"persons": n, "files": [relative paths, data then _truth],
    "records": {source: number of records in the file, bad rows included}}``.
    """
    if isinstance(as_of, datetime):
        as_of = as_of.date()
    contacts = int(contacts)
    if contacts < 1:
        raise ValueError("contacts must be >= 1")
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    (root / "_truth").mkdir(exist_ok=True)
    ymd = as_of.strftime("%Y%m%d")
    as_of_day = (as_of - _EPOCH).days
    as_of_s = int(datetime(as_of.year, as_of.month, as_of.day, tzinfo=timezone.utc).timestamp())
    N = contacts
    P = _build_pools(seed)
    pyrng = random.Random(seed)

    # ---- membership and per-person counts, drawn once for everybody ----
    mr = np.random.default_rng([seed, 1])
    in_crm = mr.random(N) < 0.70
    in_erp = mr.random(N) < 0.50
    in_crm |= ~in_erp
    crm_dup = in_crm & (mr.random(N) < 0.05)
    old_email = in_crm & in_erp & (mr.random(N) < 0.08)
    n_orders = np.where(in_erp, mr.choice(9, N, p=[0.30, 0.25, 0.17, 0.10, 0.06, 0.04, 0.03,
                                                    0.03, 0.02]), 0)
    web_active = mr.random(N) < 0.60
    n_events = np.where(web_active, np.minimum(mr.geometric(0.18, N), 20), 0)
    bounce = mr.random(N) < 0.03
    unsub = mr.random(N) < 0.04
    if orders_scale != 1.0:
        n_orders = np.rint(n_orders * orders_scale).astype(n_orders.dtype)
    if events_scale != 1.0:
        n_events = np.rint(n_events * events_scale).astype(n_events.dtype)
    if N >= 2:  # make sure the interesting cases exist even in tiny samples
        in_crm[0] = in_erp[0] = True
        in_crm[1] = crm_dup[1] = True
        n_orders[0] = max(n_orders[0], 1)
    lines_per_order = mr.choice([1, 2, 3, 4], int(n_orders.sum()), p=[0.5, 0.3, 0.15, 0.05])
    bad_rng = np.random.default_rng([seed, 2])
    plans = {
        "crm": _BadPlan(bad_rng, int(in_crm.sum() + crm_dup.sum()),
                        [("email", "invalid_email"), ("birth_date", "invalid_date"),
                         ("source_record_id", "missing_id"), ("*", "field_count")]),
        "erp": _BadPlan(bad_rng, int(in_erp.sum()),
                        [("source_record_id", "missing_id"), ("birth_date", "invalid_date"),
                         ("email", "invalid_email")]),
        "ord": _BadPlan(bad_rng, int(n_orders.sum()),
                        [("amount", "invalid_number"), ("order_date", "invalid_date")]),
        "det": _BadPlan(bad_rng, int(lines_per_order.sum()), [("quantity", "invalid_number")]),
        "web": _BadPlan(bad_rng, int(n_events.sum()),
                        [("*", "invalid_json"), ("type", "missing_required")]),
    }

    crm_f = _RecordFile(root, f"crm/crm_contacts_{ymd}.csv", [_CRM_HEADER], encoding="cp1252",
                        newline="\r\n")
    erp_f = _RecordFile(root, f"erp/erp_contacts_{ymd}.xml",
                        _sendero_header("anagrafiche-b2c", "utenti"), footer=_sendero_footer("utenti"))
    ord_f = _RecordFile(root, f"ecommerce/ordini_{ymd}.xml", _sendero_header("ordini", "ordini"),
                        footer=_sendero_footer("ordini"))
    det_f = _RecordFile(root, f"ecommerce/dettaglio-ordini_{ymd}.xml",
                        _sendero_header("dettaglio-ordini", "ordini"), footer=_sendero_footer("ordini"))
    web_f = _RecordFile(root, f"web/web_events_{ymd}.jsonl", [])
    persons_fh = open(root / "_truth" / "persons.csv", "wb")

    bad_rows: list[tuple[str, int, str, str]] = []
    truth_crm: list[pl.DataFrame] = []
    truth_erp: list[pl.DataFrame] = []
    bounce_parts: list[pl.DataFrame] = []
    unsub_parts: list[pl.DataFrame] = []
    seen: set = set()
    g = {"crm": 0, "erp": 0, "ord": 0, "det": 0, "web": 0}
    campaigns = _campaigns(as_of)
    n_chunks = (N + _CHUNK - 1) // _CHUNK

    for ci in range(n_chunks):
        p0, p1 = ci * _CHUNK, min(N, (ci + 1) * _CHUNK)
        n = p1 - p0
        last = ci == n_chunks - 1
        rng = np.random.default_rng([seed, 100, ci])
        persons = _make_persons(P, rng, pyrng, p0, n, seen, old_email[p0:p1])
        if ci == 0:
            journey_people = persons.select("email", "gender")
        persons = persons.with_columns(
            crm_email=pl.when(pl.Series(old_email[p0:p1])).then(pl.col("old_email"))
            .otherwise(pl.col("email")))

        # ---------------- CRM ----------------
        crm_txt, crm_ids_df, crm_pos, crm_bad = _crm_chunk(
            P, rng, persons, in_crm[p0:p1], crm_dup[p0:p1], plans["crm"], g["crm"], last, as_of_s)
        crm_f.write(crm_txt, crm_pos, crm_bad, bad_rows)
        truth_crm.append(crm_ids_df)
        g["crm"] += len(crm_txt)

        # ---------------- ERP ----------------
        erp = persons.filter(pl.Series(in_erp[p0:p1]))
        m = erp.height
        epos = plans["erp"].good_pos(g["erp"] + np.arange(m, dtype=np.int64))
        erp = erp.with_columns(erp_id=pl.lit("ERP") + _str(100001 + epos))
        erp_txt = _erp_text(erp, rng, as_of_s)
        erp_bad = [(pos, _bad_erp(P, rng, pos, kind, _secs_to_str(
            [as_of_s - int(rng.integers(3600, 700 * 86400))], "%Y-%m-%dT%H:%M:%S")[0]), kind)
            for pos, kind in plans["erp"].take(g["erp"], g["erp"] + m, last)]
        erp_f.write(erp_txt, epos, erp_bad, bad_rows)
        truth_erp.append(erp.select(source=pl.lit("erp_contacts"), source_record_id="erp_id",
                                    person_id="person_id"))
        g["erp"] += m

        # ---------------- orders + lines ----------------
        _orders_chunk(P, rng, erp, n_orders[p0:p1][in_erp[p0:p1]], lines_per_order, plans, g,
                      last, as_of_day, ord_f, det_f, bad_rows)

        # ---------------- web events ----------------
        _web_chunk(rng, persons, n_events[p0:p1], in_erp[p0:p1], plans["web"], g, last,
                   as_of_s, campaigns, web_f, bad_rows)

        # ---------------- ESP feedback (small, written at the end) ----------------
        bsel = persons.filter(pl.Series(bounce[p0:p1]))
        k = bsel.height
        if k:
            use_old = (bsel["old_email"] != "").to_numpy() & (rng.random(k) < 0.6)
            camp = rng.integers(0, len(campaigns), k)
            ts = np.array([campaigns[c][1] for c in camp]) + (
                rng.random(k) * np.array([campaigns[c][2] - campaigns[c][1] for c in camp])).astype(np.int64)
            bounce_parts.append(pl.DataFrame({
                "campaign_id": pl.Series([campaigns[c][0] for c in camp], dtype=pl.String),
                "email": pl.Series(np.where(use_old, bsel["old_email"].to_numpy(),
                                            bsel["email"].to_numpy()), dtype=pl.String),
                "bounce_type": pl.Series(np.where(rng.random(k) < 0.35, "hard", "soft"), dtype=pl.String),
                "ts": ts}))
        usel = persons.filter(pl.Series(unsub[p0:p1]))
        k = usel.height
        if k:
            origins = np.array(["link", "link", "link", "link", "reply", "call_center",
                                "preference_center", "link"])
            unsub_parts.append(pl.DataFrame({
                "email": usel["email"],
                "channel": pl.Series(np.where(rng.random(k) < 0.85, "email", "sms"), dtype=pl.String),
                "ts": as_of_s - rng.integers(600, 365 * 86400, k),
                "origin": pl.Series(origins[rng.integers(0, len(origins), k)], dtype=pl.String)}))

        persons.select("person_id", first_name="fn", last_name="ln", email="email",
                       country="country").write_csv(persons_fh, include_header=(ci == 0))

    persons_fh.close()
    for f in (crm_f, erp_f, ord_f, det_f, web_f):
        f.close()

    counts = {"crm_contacts": crm_f.count, "erp_contacts": erp_f.count, "ordini": ord_f.count,
              "dettaglio-ordini": det_f.count, "web_events": web_f.count}
    files = [crm_f.rel, erp_f.rel, ord_f.rel, det_f.rel]

    # ---------------- small e-commerce tables ----------------
    for table, container, tag, recs in _catalog_tables():
        rel = f"ecommerce/{table}_{ymd}.xml"
        rf = _RecordFile(root, rel, _sendero_header(table, container), footer=_sendero_footer(container))
        rf.write(pl.Series(recs, dtype=pl.String), np.arange(len(recs)), [], bad_rows)
        rf.close()
        counts[table] = rf.count
        files.append(rel)
    files.append(web_f.rel)

    if journey_events:
        from tessera.sampledata.journeys import journey_event_lines
        jrel = f"web/web_events_{ymd}_journeys.jsonl"
        lines = journey_event_lines(journey_people, as_of, seed)
        (root / jrel).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        counts["journey_events"] = len(lines)
        files.append(jrel)
        from tessera.sampledata.journeys import sms_optin_lines
        orel = f"web/sms_optins_{ymd}.csv"
        optins = sms_optin_lines(journey_people, as_of, seed)
        (root / orel).write_text("".join(line + "\n" for line in optins), encoding="utf-8")
        counts["sms_optins"] = len(optins) - 1
        files.append(orel)

    # ---------------- CRM notes and tasks (tessera.sampledata.crm) ----------------
    crm_ids = pl.concat(truth_crm)["source_record_id"].to_list()
    crm_files, crm_counts = generate_annotations(root, crm_ids, seed, ymd, as_of_s, bad_rows)
    files += crm_files
    counts.update(crm_counts)

    # ---------------- bounces / unsubscribes ----------------
    esp_rng = np.random.default_rng([seed, 3])
    bdf = _concat(bounce_parts, {"campaign_id": pl.String, "email": pl.String,
                                 "bounce_type": pl.String, "ts": pl.Int64}).sort(["ts", "email"])
    bdf = bdf.with_columns(bounced_at=_secs_to_str(bdf["ts"], "%Y-%m-%dT%H:%M:%S"))
    brel = f"email/bounces_{ymd}.csv"
    counts["bounces"] = _write_small_csv(
        root, brel, ["campaign_id", "email", "bounce_type", "bounced_at"], bdf, esp_rng,
        ("bounce_type", "not_allowed"),
        lambda r: [campaigns[int(r.integers(0, len(campaigns)))][0], "anna.bianchi@libero.it",
                   "maybe", _secs_to_str([as_of_s - int(r.integers(86400, 200 * 86400))],
                                         "%Y-%m-%dT%H:%M:%S")[0]], bad_rows)
    udf = _concat(unsub_parts, {"email": pl.String, "channel": pl.String, "ts": pl.Int64,
                                "origin": pl.String}).sort(["ts", "email"])
    udf = udf.with_columns(requested_at=_secs_to_str(udf["ts"], "%Y-%m-%dT%H:%M:%S"))
    urel = f"email/unsubscribes_{ymd}.csv"
    counts["unsubscribes"] = _write_small_csv(
        root, urel, ["email", "channel", "requested_at", "origin"], udf, esp_rng,
        ("channel", "not_allowed"),
        lambda r: ["luca.ferrari@gmail.com", "pigeon", _secs_to_str(
            [as_of_s - int(r.integers(86400, 200 * 86400))], "%Y-%m-%dT%H:%M:%S")[0], "link"],
        bad_rows)
    files += [brel, urel]

    # ---------------- campaign costs (ROAS per campaign; no personal data) ----------------
    # what each monthly campaign cost per channel, one line per campaign, channel and month
    cost_rng = np.random.default_rng([seed, 16])
    cost_rows = [(cid, ch, datetime.fromtimestamp(start, timezone.utc).strftime("%Y-%m-%d"),
                  f"{float(cost_rng.uniform(lo, hi)):.2f}")
                 for cid, start, _end in campaigns
                 for ch, lo, hi in (("email", 150, 400), ("social", 300, 1200), ("search", 200, 900))]
    cdf = pl.DataFrame(cost_rows, schema=["campaign_id", "channel", "spend_date", "cost"], orient="row")
    crel = f"marketing/campaign_costs_{ymd}.csv"
    counts["campaign_costs"] = _write_small_csv(
        root, crel, ["campaign_id", "channel", "spend_date", "cost"], cdf, cost_rng,
        ("cost", "invalid_number"),
        lambda r: [campaigns[int(r.integers(0, len(campaigns)))][0], "social",
                   campaigns[0][0][4:] + "-01", "about 300"], bad_rows)
    files.append(crel)

    # ---------------- B2B registries (tessera.sampledata.b2b) ----------------
    # company users who are also B2C people are drawn from the first persons
    people = pl.read_csv(root / "_truth" / "persons.csv", n_rows=20_000,
                         infer_schema_length=0).to_dicts()
    b2b_files, b2b_counts = generate_b2b(root, people, seed, ymd, bad_rows)
    files += b2b_files
    counts.update(b2b_counts)
    # the contact card's entities (tessera.sampledata.contact_data): messages, app events,
    # details
    from tessera.sampledata.contact_data import generate_contact_data
    card_files, card_counts = generate_contact_data(root, people, crm_ids, campaigns, seed, ymd,
                                                    as_of_s, bad_rows)
    files += card_files
    counts.update(card_counts)
    # the seeds' examples (tessera.sampledata.seeds): planted companies and their users
    seed_files, seed_counts = plant_seed_examples(root, ymd, as_of)
    for name, added in seed_counts.items():
        counts[name] += added

    # ---------------- truth ----------------
    truth = pl.concat(truth_crm + truth_erp)
    truth.write_csv(root / "_truth" / "records.csv")
    pl.DataFrame(bad_rows, schema=["file", "line", "field", "problem"], orient="row") \
        .sort(["file", "line"]).write_csv(root / "_truth" / "bad_rows.csv")
    files += ["_truth/records.csv", "_truth/bad_rows.csv", "_truth/persons.csv",
              "_truth/b2b_companies.csv", "_truth/b2b_users.csv", "_truth/b2b_potential.csv",
              *seed_files]
    return {"persons": N, "files": files, "records": counts}


# --------------------------------------------------------------------------- #
# Per-source builders
# --------------------------------------------------------------------------- #
def _campaigns(as_of: date) -> list[tuple[str, int, int]]:
    """The ten monthly campaigns before as_of's month: (id, month start s, month end s)."""
    out = []
    y, m = as_of.year, as_of.month
    limit = int(datetime(as_of.year, as_of.month, as_of.day, tzinfo=timezone.utc).timestamp())
    for _ in range(10):
        m -= 1
        if m == 0:
            y, m = y - 1, 12
        start = int(datetime(y, m, 1, tzinfo=timezone.utc).timestamp())
        ny, nm = (y + 1, 1) if m == 12 else (y, m + 1)
        end = min(int(datetime(ny, nm, 1, tzinfo=timezone.utc).timestamp()), limit)
        out.append((f"CMP-{y}-{m:02d}", start, end))
    return out[::-1]


def _concat(parts: list[pl.DataFrame], schema: dict) -> pl.DataFrame:
    return pl.concat(parts) if parts else pl.DataFrame(schema=schema)


def _crm_phone() -> pl.Expr:
    """CRM phone in one of five human formats (format index in column ``_pfmt``)."""
    d = pl.col("phone")
    s = d.str.slice
    cc = pl.when(pl.col("is_pl")).then(pl.lit("48")).otherwise(pl.lit("39"))
    grouped3 = s(0, 3) + " " + s(3, 3) + " " + s(6)
    f = pl.col("_pfmt")
    return (pl.when(pl.col("phone") == "").then(pl.lit(""))
            .when(f == 0).then(grouped3)
            .when(f == 1).then(pl.lit("00") + cc + " " + pl.when(pl.col("is_pl"))
                               .then(s(0, 3) + "-" + s(3, 3) + "-" + s(6))
                               .otherwise(s(0, 3) + "-" + s(3)))
            .when(f == 2).then(pl.lit("(+") + cc + ") " + d)
            .when(f == 3).then(d)
            .otherwise(pl.lit("+") + cc + " " + pl.when(pl.col("is_pl")).then(grouped3)
                       .otherwise(s(0, 3) + " " + s(3))))


def _typo(text: str, r: float, drop: bool) -> str:
    if len(text) < 4:
        return text
    k = 1 + int(r * (len(text) - 2))
    if drop:
        return text[:k] + text[k + 1:]
    return text[:k - 1] + text[k] + text[k - 1] + text[k + 1:] if text[k] != text[k - 1] \
        else text[:k] + text[k + 1:]


def _crm_chunk(P, rng, persons, in_crm, dup, plan: _BadPlan, g0: int, last: bool, as_of_s: int):
    prim = persons.filter(pl.Series(in_crm))
    sec = persons.filter(pl.Series(dup))
    m1, m2 = prim.height, sec.height
    # e-mail variants of the primary record
    v = rng.random(m1)
    spaces = np.array([" ", "  ", "\t"])[rng.integers(0, 3, m1)]
    lead = rng.random(m1) < 0.5
    prim = prim.with_columns(_ev=pl.Series(np.where(v < 0.075, 1, np.where(v < 0.15, 2, 0))),
                             _sp=pl.Series(spaces, dtype=pl.String), _lead=pl.Series(lead))
    e = pl.col("crm_email")
    prim = prim.with_columns(
        email_out=pl.when(pl.col("_ev") == 1).then(e.str.to_uppercase())
        .when((pl.col("_ev") == 2) & pl.col("_lead")).then(pl.col("_sp") + e)
        .when(pl.col("_ev") == 2).then(e + pl.col("_sp"))
        .otherwise(e))
    # names: typos and ALL CAPS
    r = rng.random(m1)
    caps = (r >= 0.05) & (r < 0.10)
    nome = prim["fn_cp"].to_list()
    cognome = prim["ln_cp"].to_list()
    tr = rng.random((m1, 3))
    for i in np.nonzero(r < 0.05)[0]:
        if tr[i, 0] < 0.5:
            nome[i] = _typo(nome[i], tr[i, 1], tr[i, 2] < 0.5)
        else:
            cognome[i] = _typo(cognome[i], tr[i, 1], tr[i, 2] < 0.5)
    prim = prim.with_columns(nome=pl.Series(nome, dtype=pl.String),
                             cognome=pl.Series(cognome, dtype=pl.String), _caps=pl.Series(caps))
    prim = prim.with_columns(
        nome=pl.when(pl.col("_caps")).then(pl.col("nome").str.to_uppercase()).otherwise(pl.col("nome")),
        cognome=pl.when(pl.col("_caps")).then(pl.col("cognome").str.to_uppercase())
        .otherwise(pl.col("cognome")),
        _nophone=pl.Series(rng.random(m1) < 0.05))
    # the second record of a within-CRM duplicate: same e-mail, other case, maybe no phone
    primary_upper = prim.filter(pl.Series(dup[in_crm]))["_ev"] == 1
    sec = sec.with_columns(
        nome=pl.col("fn_cp"), cognome=pl.col("ln_cp"),
        email_out=pl.when(pl.Series(primary_upper.to_numpy()))
        .then(pl.col("crm_email").str.to_titlecase()).otherwise(pl.col("crm_email").str.to_uppercase()),
        _nophone=pl.Series(rng.random(m2) < 0.5))
    cols = ["person_id", "nome", "cognome", "email_out", "_nophone", "phone", "is_pl", "birth",
            "gender", "address_cp", "cap", "city_cp", "prov", "country", "cf", "tier"]
    crm = pl.concat([prim.select(cols), sec.select(cols)])
    m = crm.height
    crm = crm[rng.permutation(m)] if m else crm
    pos = plan.good_pos(g0 + np.arange(m, dtype=np.int64))
    nl = rng.random(m) < 0.01
    second = np.array(_ADDR_SECOND_LINE)[rng.integers(0, len(_ADDR_SECOND_LINE), m)]
    consent = np.array(["1", "1", "1", "1", "1", "0", "0", "0", ""])[rng.integers(0, 9, m)]
    mod_s = as_of_s - rng.integers(60, 730 * 86400, m)
    crm = crm.with_columns(
        crm_id=pl.lit("CRM-") + _zfill(pos + 1, 6),
        _pfmt=pl.Series(rng.choice(5, m, p=[0.35, 0.2, 0.15, 0.15, 0.15])),
        phone=pl.when(pl.col("_nophone")).then(pl.lit("")).otherwise(pl.col("phone")),
        _nobirth=pl.Series(rng.random(m) < 0.03), _nocf=pl.Series(rng.random(m) < 0.10),
        _notier=pl.Series(rng.random(m) < 0.10), _nl=pl.Series(nl),
        _second=pl.Series(second, dtype=pl.String),
        consenso_email=pl.Series(consent, dtype=pl.String),
        data_modifica=_secs_to_str(mod_s, "%d/%m/%Y %H:%M"),
    )
    crm = crm.with_columns(
        cellulare=_crm_phone(),
        data_nascita=pl.when(pl.col("_nobirth")).then(pl.lit(""))
        .otherwise(pl.col("birth").dt.strftime("%d/%m/%Y")),
        indirizzo=pl.when(pl.col("_nl")).then(pl.col("address_cp") + "\n" + pl.col("_second"))
        .otherwise(pl.col("address_cp")),
        codice_fiscale=pl.when(pl.col("_nocf")).then(pl.lit("")).otherwise(pl.col("cf")),
        livello_fedelta=pl.when(pl.col("_notier")).then(pl.lit("")).otherwise(pl.col("tier")),
        # the account owner (CRM user); one contact in five has none. Drawn from the
        # record's position, not the random stream, so the rest of the sample is unchanged.
        proprietario=pl.Series(np.array(["g.rossi", "m.bianchi", "a.kowalska", "l.ferrari", ""])[pos % 5],
                               dtype=pl.String),
    ).rename({"email_out": "email", "gender": "sesso", "city_cp": "citta", "prov": "provincia",
              "country": "paese"})
    text = crm.select(pl.concat_str([_quote_expr(c, ";") for c in _CRM_COLS], separator=";")
                      .alias("t"))["t"]
    bad = []
    for bpos, kind in plan.take(g0, g0 + m, last):
        mod = _secs_to_str([as_of_s - int(rng.integers(60, 730 * 86400))], "%d/%m/%Y %H:%M")[0]
        bad.append((bpos, _bad_crm(P, rng, bpos, kind, mod), kind))
    truth = crm.select(source=pl.lit("crm_contacts"), source_record_id="crm_id", person_id="person_id")
    truth = truth[np.argsort(pos, kind="stable")] if m else truth
    return text, truth, pos, bad


def _erp_text(erp: pl.DataFrame, rng, as_of_s: int) -> pl.Series:
    m = erp.height
    fisso_it = "+390" + _str(rng.integers(10, 99, m)) + _zfill(rng.integers(0, 10**7, m), 7)
    fisso_pl = "+48" + _str(rng.integers(12, 95, m)) + _zfill(rng.integers(0, 10**7, m), 7)
    erp = erp.with_columns(
        idgestionale=pl.col("erp_id"), nome=pl.col("fn"), cognome=pl.col("ln"),
        telefonocellulare=pl.when(pl.Series(rng.random(m) < 0.03)).then(pl.lit(""))
        .otherwise(pl.when(pl.col("is_pl")).then(pl.lit("+48")).otherwise(pl.lit("+39")) + pl.col("phone")),
        telefonofisso=pl.when(pl.Series(rng.random(m) >= 0.12)).then(pl.lit(""))
        .otherwise(pl.when(pl.col("is_pl")).then(fisso_pl).otherwise(fisso_it)),
        indirizzo=pl.col("address"), citta=pl.col("city"), provinciaiso=pl.col("prov"),
        paeseiso=pl.col("country"),
        datanascita=pl.when(pl.Series(rng.random(m) < 0.04)).then(pl.lit(""))
        .otherwise(pl.col("birth").dt.strftime("%d/%m/%Y")),
        sesso=pl.col("gender"),
        codicefiscale=pl.when(pl.Series(rng.random(m) < 0.05)).then(pl.lit("")).otherwise(pl.col("cf")),
        datamodifica=_secs_to_str(as_of_s - rng.integers(3600, 730 * 86400, m), "%Y-%m-%dT%H:%M:%S"),
    )
    return erp.select(_xml_block_expr("utente", _ERP_FIELDS).alias("t"))["t"]


# The demo's sales-channel micros (examples/demo/lookups.yaml), by predefined macro:
# 1 e-commerce: 4 web shop, 5 app, 6 marketplace; 2 store: 1 Milan, 2 Rome, 3 Turin;
# 3 phone: 7 call centre; 4 mail: 8 catalogue. Ids are global, as in Sendero's table.
_CHANNEL_MICROS = {1: (4, 5, 6), 2: (1, 2, 3), 3: (7,), 4: (8,)}


def _channel_micro(macro: np.ndarray, draw: np.ndarray) -> np.ndarray:
    """A micro under each order's macro, from a draw of 1..8 (the draw the sample always
    made, so that every other value of the sample stays as it was)."""
    out = np.empty(len(macro), dtype=np.int64)
    for m, micros in _CHANNEL_MICROS.items():
        sel = macro == m
        out[sel] = np.array(micros)[draw[sel] % len(micros)]
    return out


def _orders_chunk(P, rng, erp: pl.DataFrame, n_ord: np.ndarray, lines_all: np.ndarray, plans, g,
                  last: bool, as_of_day: int, ord_f: _RecordFile, det_f: _RecordFile, bad_rows):
    k = int(n_ord.sum())
    owner = np.repeat(np.arange(erp.height), n_ord)
    day = as_of_day - rng.integers(1, 3 * 365 + 1, k)
    srt = np.lexsort((day, owner))
    owner, day = owner[srt], day[srt]
    o0, d0 = g["ord"], g["det"]
    lines = lines_all[o0:o0 + k]
    n_det = int(lines.sum())
    d_order = np.repeat(np.arange(k), lines)
    pw = np.array([p[4] for p in _PRODUCTS], dtype=float)
    prod = rng.choice(len(_PRODUCTS), n_det, p=pw / pw.sum())
    qty = rng.choice([1, 2, 3, 4, 5], n_det, p=[0.75, 0.17, 0.05, 0.02, 0.01])
    disc = rng.choice([100, 90, 80, 70], n_det, p=[0.7, 0.15, 0.1, 0.05])
    list_price = np.array([p[3] for p in _PRODUCTS], dtype=np.int64)[prod]
    price = (list_price * disc + 50) // 100
    amount = np.bincount(d_order, weights=(qty * price).astype(np.float64), minlength=k)
    amount = np.rint(amount).astype(np.int64)

    opos = plans["ord"].good_pos(o0 + np.arange(k, dtype=np.int64))
    order_id = opos + 1
    erp_ids = erp["erp_id"]
    offer = rng.integers(1, 13, k)
    macro = rng.choice([1, 2, 3, 4], k, p=[0.55, 0.3, 0.1, 0.05])
    odf = pl.DataFrame({
        "idOrdine": _str(order_id),
        "idCanaleMacro": _str(macro),
        "idCanaleMicro": _str(_channel_micro(macro, rng.integers(1, 9, k))),
        "data": _days_to_str(day, "%d/%m/%Y"),
        "importo": _fmt_cents(amount),
        "idCliente": erp_ids.gather(owner) if k else pl.Series([], dtype=pl.String),
        "idOfferta": pl.Series(np.where(rng.random(k) < 0.6, "", _str(offer).to_numpy()),
                               dtype=pl.String),
    })
    otext = odf.select(_xml_block_expr("ordine", _ORDER_FIELDS).alias("t"))["t"]
    obad = []
    for bpos, kind in plans["ord"].take(o0, o0 + k, last):
        vals = {"idOrdine": str(bpos + 1), "idCanaleMacro": "1",
                "idCanaleMicro": str(int(_channel_micro(np.array([1]), rng.integers(1, 9, 1))[0])),
                "data": _days_to_str([as_of_day - int(rng.integers(1, 1000))], "%d/%m/%Y")[0],
                "importo": f"{int(rng.integers(10, 500))}.00",
                "idCliente": erp_ids[int(rng.integers(0, erp.height))] if erp.height else "",
                "idOfferta": ""}
        if kind[0] == "amount":
            vals["importo"] = "centocinquanta"
        else:
            vals["data"] = "2026/13/01"
        obad.append((bpos, _xml_block("ordine", _ORDER_FIELDS, vals), kind))
    ord_f.write(otext, opos, obad, bad_rows)

    dpos = plans["det"].good_pos(d0 + np.arange(n_det, dtype=np.int64))
    ddf = pl.DataFrame({
        "idDettaglioOrdine": _str(dpos + 1),
        "idOrdine": _str(order_id[d_order]),
        "idProdotto": _str(np.array([p[0] for p in _PRODUCTS])[prod]),
        "idServizio": pl.Series([""] * n_det, dtype=pl.String),
        "quantita": _str(qty),
        "prezzo": _fmt_cents(price),
    })
    dtext = ddf.select(_xml_block_expr("dettaglio", _DETAIL_FIELDS).alias("t"))["t"]
    dbad = []
    for bpos, kind in plans["det"].take(d0, d0 + n_det, last):
        p = _PRODUCTS[int(rng.integers(0, len(_PRODUCTS)))]
        vals = {"idDettaglioOrdine": str(bpos + 1),
                "idOrdine": str(order_id[int(rng.integers(0, k))]) if k else "",
                "idProdotto": str(p[0]), "idServizio": "", "quantita": "abc",
                "prezzo": f"{p[3] // 100}.{p[3] % 100:02d}"}
        dbad.append((bpos, _xml_block("dettaglio", _DETAIL_FIELDS, vals), kind))
    det_f.write(dtext, dpos, dbad, bad_rows)
    g["ord"] += k
    g["det"] += n_det


def _web_chunk(rng, persons: pl.DataFrame, n_ev: np.ndarray, in_erp: np.ndarray, plan: _BadPlan,
               g, last: bool, as_of_s: int, campaigns, web_f: _RecordFile, bad_rows):
    k = int(n_ev.sum())
    owner = np.repeat(np.arange(persons.height), n_ev)
    ts = as_of_s - rng.integers(1, 90 * 86400 + 1, k)
    srt = np.lexsort((ts, owner))
    owner, ts = owner[srt], ts[srt]
    w0 = g["web"]
    pos = plan.good_pos(w0 + np.arange(k, dtype=np.int64))
    sub = persons.select("email", "old_email", "is_pl").gather(owner) if k else \
        persons.select("email", "old_email", "is_pl").head(0)
    use_old = (sub["old_email"] != "").to_numpy() & (rng.random(k) < 0.5)
    tw = np.array([t[1] for t in _EVENT_TYPES], dtype=float)
    etype = rng.choice(len(_EVENT_TYPES), k, p=tw / tw.sum())
    dw = np.array([d[3] for d in _DEVICES], dtype=float)
    dev = rng.choice(len(_DEVICES), k, p=dw / dw.sum())
    pw = np.array([p[4] for p in _PRODUCTS], dtype=float)
    prod = np.array([p[0] for p in _PRODUCTS])[rng.choice(len(_PRODUCTS), k, p=pw / pw.sum())]
    df = pl.DataFrame({
        "id": "EV" + _zfill(pos + 1, 8),
        "type": pl.Series(np.array([t[0] for t in _EVENT_TYPES])[etype], dtype=pl.String),
        "at": _secs_to_str(ts, "%Y-%m-%dT%H:%M:%SZ"),
        "email": pl.Series(np.where(use_old, sub["old_email"].to_numpy(), sub["email"].to_numpy()),
                           dtype=pl.String),
        "lang": pl.Series(np.where(sub["is_pl"].to_numpy(), "pl", "it"), dtype=pl.String),
        "device": pl.Series(np.array([d[0] for d in _DEVICES])[dev], dtype=pl.String),
        "os": pl.Series(np.array([d[1] for d in _DEVICES])[dev], dtype=pl.String),
        "browser": pl.Series(np.array([d[2] for d in _DEVICES])[dev], dtype=pl.String),
        "prod": _str(prod),
        "qty": _str(rng.choice([1, 2, 3], k, p=[0.8, 0.15, 0.05])),
        "camp": pl.Series(np.array([c[0] for c in campaigns])[
            np.minimum(len(campaigns) - 1, len(campaigns) - 1 - rng.integers(0, 3, k))], dtype=pl.String),
        "form": pl.Series(np.array(_FORMS)[rng.integers(0, len(_FORMS), k)], dtype=pl.String),
        "dl": pl.Series(np.array(_DOWNLOADS)[rng.integers(0, len(_DOWNLOADS), k)], dtype=pl.String),
    })
    t = pl.col("type")
    lang = pl.col("lang")
    prodpath = pl.when(lang == "pl").then(pl.lit("/pl/produkty/")).otherwise(pl.lit("/it/prodotti/"))
    dvc = (pl.lit('"device": "') + pl.col("device") + '", "os": "' + pl.col("os")
           + '", "browser": "' + pl.col("browser") + '"')
    props = (pl.when(t == "page_view").then(pl.lit('{"url": "') + prodpath + pl.col("prod") + '", ' + dvc + "}")
             .when(t == "download").then(pl.lit('{"url": "/') + lang + "/download/" + pl.col("dl") + '", ' + dvc + "}")
             .when(t == "email_open").then(pl.lit('{"campaign_id": "') + pl.col("camp") + '", ' + dvc + "}")
             .when(t == "email_click").then(pl.lit('{"campaign_id": "') + pl.col("camp") + '", "url": "'
                                            + prodpath + pl.col("prod") + '", ' + dvc + "}")
             .when(t == "form_fill").then(pl.lit('{"form": "') + pl.col("form") + '", "url": "/' + lang
                                          + "/" + pl.col("form") + '", ' + dvc + "}")
             .otherwise(pl.lit('{"url": "/') + lang + '/carrello", "product_id": ' + pl.col("prod")
                        + ', "quantity": ' + pl.col("qty") + ", " + dvc + "}"))
    text = df.select((pl.lit('{"event_id": "') + pl.col("id") + '", "type": "' + t
                      + '", "occurred_at": "' + pl.col("at") + '", "email": "' + pl.col("email")
                      + '", "properties": ' + props + "}").alias("t"))["t"]
    bad = []
    for bpos, kind in plan.take(w0, w0 + k, last):
        ev = {"event_id": f"EV{bpos + 1:08d}", "type": "page_view",
              "occurred_at": _secs_to_str([as_of_s - int(rng.integers(1, 90 * 86400))],
                                          "%Y-%m-%dT%H:%M:%SZ")[0],
              "email": "giulia.conti@gmail.com",
              "properties": {"url": "/it/prodotti/345", "device": "desktop", "os": "Windows",
                             "browser": "Chrome"}}
        if kind[0] == "type":
            del ev["type"]
            line = json.dumps(ev)
        else:
            full = json.dumps(ev)
            line = full[: int(len(full) * 0.6)]
        bad.append((bpos, line, kind))
    web_f.write(text, pos, bad, bad_rows)
    g["web"] += k


def _catalog_tables() -> list[tuple[str, str, str, list[str]]]:
    macro_of = {i: mac for i, mac, _ in _MICRO}
    prods = [_xml_block("prodotto", ["idProdotto", "descrizione", "idLineaProdottoMacro",
                                     "idLineaProdottoMicro"],
                        {"idProdotto": pid, "descrizione": d, "idLineaProdottoMacro": macro_of[mic],
                         "idLineaProdottoMicro": mic})
             for pid, d, mic, _, _ in _PRODUCTS]
    macro = [_xml_block("linea", ["idLineaProdottoMacro", "descrizione"],
                        {"idLineaProdottoMacro": i, "descrizione": d}) for i, d in _MACRO]
    micro = [_xml_block("linea", ["idLineaProdottoMicro", "idLineaProdottoMacro", "descrizione"],
                        {"idLineaProdottoMicro": i, "idLineaProdottoMacro": mac, "descrizione": d})
             for i, mac, d in _MICRO]
    smacro_of = {i: mac for i, mac, _ in _SERVICE_MICRO}
    services = [_xml_block("servizio", ["idServizio", "descrizione", "idLineaServizioMacro",
                                        "idLineaServizioMicro"],
                           {"idServizio": sid, "descrizione": d, "idLineaServizioMacro": smacro_of[mic],
                            "idLineaServizioMicro": mic})
                for sid, d, mic in _SERVICES]
    smacro = [_xml_block("linea", ["idLineaServizioMacro", "descrizione"],
                         {"idLineaServizioMacro": i, "descrizione": d}) for i, d in _SERVICE_MACRO]
    smicro = [_xml_block("linea", ["idLineaServizioMicro", "idLineaServizioMacro", "descrizione"],
                         {"idLineaServizioMicro": i, "idLineaServizioMacro": mac, "descrizione": d})
              for i, mac, d in _SERVICE_MICRO]
    offers = [_xml_block("offerta", ["idOffertaGestionale", "descrizione", "periodoDa", "periodoA"],
                         {"idOffertaGestionale": i, "descrizione": d, "periodoDa": a, "periodoA": b})
              for i, d, a, b in _OFFERS]
    return [("prodotti", "prodotti", "prodotto", prods),
            ("linee-prodotti-macro", "linee", "linea", macro),
            ("linee-prodotti-micro", "linee", "linea", micro),
            ("servizi", "servizi", "servizio", services),
            ("linee-servizi-macro", "linee", "linea", smacro),
            ("linee-servizi-micro", "linee", "linea", smicro),
            ("offerte", "offerte", "offerta", offers)]


def _write_small_csv(root: Path, rel: str, header: list[str], df: pl.DataFrame,
                     rng: np.random.Generator, kind: tuple[str, str], make_bad, bad_rows) -> int:
    rf = _RecordFile(root, rel, [",".join(header)])
    n = df.height
    plan = _BadPlan(rng, n, [kind])
    text = df.select(pl.concat_str([_quote_expr(c, ",") for c in header], separator=",")
                     .alias("t"))["t"] if n else pl.Series([], dtype=pl.String)
    bad = [(bpos, _csv_line(make_bad(rng), ","), k) for bpos, k in plan.take(0, n, True)]
    rf.write(text, plan.good_pos(np.arange(n, dtype=np.int64)), bad, bad_rows)
    rf.close()
    return rf.count
