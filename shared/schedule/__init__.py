"""Conference schedule formats: frab/pentabarf XML, C3VOC schedule.json, iCal, xCal and CSV.

Shared helpers (identity, XML-safe text, conference days and durations) sit beside one writer module per export
format and the import side's readers. The neutral model between formats is the Open Event archive record; what the
model cannot hold travels in each record's ``x-schedule`` dict (see ``identity``).
"""
