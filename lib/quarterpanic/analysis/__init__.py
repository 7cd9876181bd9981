"""The analysis: tidy frames in, tidy frames out; pure computation, no charts and no sentences.

It owns the qualification rule (``rule``), the per-deal features and quarter roles (``features``), each detector
(``qualification``, ``reactive``, with ``workload``, ``turnaround`` and ``outcomes`` as the measures they build on),
onset search (``onset``), the findings table and its multiple-testing control (``findings``), running every
detector (``detect``), the panic index (``panic_index``), the in-quarter early warning (``early_warning``) and the
overview tables (``overview``). A new detector is a module here registered in ``detect.COMPONENTS``. It may import
``dataset``, ``store`` (the results cache), ``calendar``, ``params``, ``errors``, ``paths`` and ``util``; never
``report``, ``run`` or ``cli``, never matplotlib or seaborn, and it reads no export files itself.
"""
