"""Reading order, noise dropping and the text layer drawn from OCR words (ocr.layout, ocr.pdf)."""

from __future__ import annotations

import unicodedata

import pymupdf

from ocr.layout import drop_noise, is_noise, reading_order, split_wide_gaps, text_of
from ocr.models import Word
from ocr.pdf import text_layer_pdf
from ocr.recognize import _picture_lines

H = 40  # line height in px


def line(text: str, left: int, top: int, conf: float = 0.95) -> list[Word]:
    """Words of ``text`` laid out from ``left`` at 20 px a character, 20 px between words."""
    words, x = [], left
    for token in text.split():
        words.append(Word(text=token, left=x, top=top, width=20 * len(token), height=H, confidence=conf))
        x += 20 * len(token) + 20
    return words


def centred(text: str, centre: int, top: int) -> list[Word]:
    return line(text, centre - (20 * len(text)) // 2, top)


def test_signature_block_reads_left_block_then_right() -> None:
    rows = [
        (centred("BÊN ỦY QUYỀN", 800, 200), centred("BÊN NHẬN ỦY QUYỀN", 1800, 200)),
        (centred("(Ký, ghi rõ họ tên)", 800, 260), centred("(Ký, ghi rõ họ tên)", 1800, 260)),
        (centred("Nguyễn Trọng Sơn", 800, 600), centred("Nguyễn Mỹ Ly", 1800, 600)),
    ]
    tesseract_order = [ln for pair in rows for ln in pair]  # row by row, as psm 4 reads it
    ordered = reading_order(tesseract_order)
    assert text_of(ordered).split("\n") == [
        "BÊN ỦY QUYỀN", "(Ký, ghi rõ họ tên)", "Nguyễn Trọng Sơn",
        "BÊN NHẬN ỦY QUYỀN", "(Ký, ghi rõ họ tên)", "Nguyễn Mỹ Ly",
    ]


def test_two_blocks_on_one_tesseract_line_are_split_then_ordered() -> None:
    left = centred("UBND XÃ AN DƯƠNG", 600, 100)
    right = centred("CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM", 1700, 100)
    merged = left + right  # Tesseract joined the two headers that share a baseline
    below = [centred("Số: 12/UBND", 600, 160), centred("Độc lập - Tự do - Hạnh phúc", 1700, 160)]
    ordered = reading_order(split_wide_gaps([merged, *below]))
    assert text_of(ordered).split("\n") == [
        "UBND XÃ AN DƯƠNG", "Số: 12/UBND", "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM", "Độc lập - Tự do - Hạnh phúc",
    ]


def test_form_rows_and_table_rows_stay_row_by_row() -> None:
    lines = [
        line("Giới tính: Nam", 300, 100), line("Sinh ngày: 15/04/1990", 1300, 100),
        line("Dân tộc: Kinh", 300, 160), line("Quốc tịch: Việt Nam", 1300, 160),
        line("Nguyễn Văn An", 300, 220), line("Chủ hộ", 1300, 220),
    ]
    assert text_of(reading_order(lines)).split("\n") == [
        "Giới tính: Nam", "Sinh ngày: 15/04/1990", "Dân tộc: Kinh", "Quốc tịch: Việt Nam", "Nguyễn Văn An", "Chủ hộ",
    ]


def test_full_width_line_ends_a_column_band() -> None:
    lines = [
        centred("BÊN A", 800, 100), centred("BÊN B", 1800, 100),
        centred("(Ký tên)", 800, 160), centred("(Ký tên)", 1800, 160),
        line("Hợp đồng này có hiệu lực kể từ ngày ký và được lập thành hai bản", 300, 260),
        centred("Trần Văn Cường", 800, 360), centred("Lê Thị Dung", 1800, 360),
    ]
    assert text_of(reading_order(lines)).split("\n") == [
        "BÊN A", "(Ký tên)", "BÊN B", "(Ký tên)",
        "Hợp đồng này có hiệu lực kể từ ngày ký và được lập thành hai bản",
        "Trần Văn Cường", "Lê Thị Dung",
    ]


def test_noise_words_are_dropped_and_punctuation_kept() -> None:
    def w(text: str, conf: float = 0.96) -> Word:
        return Word(text=text, left=0, top=0, width=10, height=10, confidence=conf)

    assert is_noise(w("|")) and is_noise(w("”")) and is_noise(w("=")) and is_noise(w("Ì", 0.45))
    assert not is_noise(w("NGUYEN<<AN<<<<<<<<", 0.4)) and not is_noise(w("m?.", 0.5))
    assert not is_noise(w("-")) and not is_noise(w("/")) and not is_noise(w("-/-"))
    assert not is_noise(w("ở", 0.9)) and not is_noise(w("1", 0.3)) and not is_noise(w("Số"))
    photo = [w("|"), w("("), w("Ì", 0.4)]
    kept = drop_noise([photo, [w("|"), w("Họ"), w("/"), w("tên")], [w("-")]])
    assert [[x.text for x in ln] for ln in kept] == [["Họ", "/", "tên"]]


def test_picture_region_keeps_confident_new_lines_only() -> None:
    header = "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext"
    tsv = "\n".join([
        header,
        "5\t1\t1\t1\t1\t1\t10\t10\t200\t40\t92\tNGƯỜI",
        "5\t1\t1\t1\t1\t2\t230\t10\t200\t40\t91\tTHỰC",
        "5\t1\t1\t1\t2\t1\t10\t70\t60\t40\t30\tVÌ,",  # a seal's rim: unsure
        "5\t1\t1\t1\t2\t2\t80\t70\t60\t40\t25\tA2",
        "5\t1\t1\t1\t3\t1\t10\t130\t300\t40\t95\tĐÔNG",  # already read by the page's own pass
    ])
    taken = [Word(text="ĐÔNG", left=1010, top=2130, width=300, height=40, confidence=0.9)]
    lines = _picture_lines(tsv, (1000, 2000), taken)
    assert [[(x.text, x.left, x.top) for x in ln] for ln in lines] == [[("NGƯỜI", 1010, 2010), ("THỰC", 1230, 2010)]]
    assert len(taken) == 3


def test_text_layer_extracts_back_in_order_and_nfc() -> None:
    decomposed = unicodedata.normalize("NFD", "Nguyễn Mỹ Ly")
    lines = [
        centred("BÊN ỦY QUYỀN", 800, 200), centred("(Ký, ghi rõ họ tên)", 800, 260),
        centred("BÊN NHẬN ỦY QUYỀN", 1800, 200), line(unicodedata.normalize("NFC", decomposed), 1600, 260),
    ]
    pdf = text_layer_pdf(lines, 2480, 3508, 300)
    with pymupdf.open(stream=pdf, filetype="pdf") as doc:
        page = doc[0]
        assert page.get_text().split("\n")[:4] == [
            "BÊN ỦY QUYỀN", "(Ký, ghi rõ họ tên)", "BÊN NHẬN ỦY QUYỀN", "Nguyễn Mỹ Ly",
        ]
        # each word lies on its box (points = px * 72 / 300)
        found = [w[:4] for w in page.get_text("words") if w[4] == "QUYỀN"]
    x0, y0, x1, y1 = found[0]
    box = lines[0][2]
    assert abs(x0 - box.left * 0.24) < 1 and abs(x1 - (box.left + box.width) * 0.24) < 3
    assert abs(y0 - box.top * 0.24) < 2 and abs(y1 - (box.top + H) * 0.24) < 2


def test_table_with_centred_cells_stays_row_by_row() -> None:
    rows = []
    for i, (name, number) in enumerate([("Nguyễn Văn An", "020065098860"), ("Lê Thị Bình Minh", "040194145690")]):
        top = 100 + 60 * i
        rows += [centred(str(i + 1), 200, top), line(name, 400, top), centred(number, 1700, top)]
    assert text_of(reading_order(rows)).split("\n") == [
        "1", "Nguyễn Văn An", "020065098860", "2", "Lê Thị Bình Minh", "040194145690",
    ]


def test_form_rows_with_ragged_right_cells_stay_row_by_row() -> None:
    lines = [
        line("Giới tính: Nam", 354, 744), line("Sinh ngày: 15/04/1990", 1240, 744),
        line("Dân tộc: Chăm", 354, 809), line("Quốc tịch: Việt Nam", 1215, 809),
    ]
    assert text_of(reading_order(lines)).split("\n") == [
        "Giới tính: Nam", "Sinh ngày: 15/04/1990", "Dân tộc: Chăm", "Quốc tịch: Việt Nam",
    ]
