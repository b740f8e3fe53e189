// The options several commands share, defined once so that an option means the same thing in every command
// (docs/options.md is the table; Tests/CLITests/VocabularyTests checks every command's options against it).
// A command may add words after the meaning (`detail`) and may have another default with a reason.

enum Vocabulary {
    static let potential = OptionSpec("--potential", value: "MODEL",
        help: "the potential: a model file (.safetensors), a model name (relaxft models list), or sw or lj with parameter overrides (sw:sigma=2.1,lambda=20)")
        .alias("--pretrained", "--model")
    static let data = OptionSpec("--data", value: "FILE", help: "data, extended XYZ (repeatable)")
    static let initial = OptionSpec("--initial", value: "FILE", help: "initial structures, matched frame by frame with --target (instead of --data)")
    static let target = OptionSpec("--target", value: "FILE", help: "reference relaxed structures, matched frame by frame with --initial")
    static let frames = OptionSpec("--frames", value: "SLICE",
        help: "frames to use from each input file, a Python index or slice: 3, -1, 0:10:2 (default: all)")
    static let skipUnknownElements = OptionSpec("--skip-unknown-elements",
        help: "leave out structures with elements the potential does not know, and say how many, instead of stopping with an error")
    static let out = OptionSpec("-o", "--out", value: "PATH", help: "where the results go").alias("--output")
    static let json = OptionSpec("--json", help: "machine-readable results on standard output (JSON); log lines go to standard error")
    static let quiet = OptionSpec("--quiet", help: "no log or progress lines (results, warnings and errors are still printed)")
    static let seed = OptionSpec("--seed", value: "N", default: "1", help: "seed of the run's random numbers")
    static let threads = OptionSpec("--threads", value: "N", help: "cores to use: structures in parallel, spare cores inside one structure's operations, same bits (default: the number of cores; per rank, its share of the node)")

    // Relaxations
    static let relaxer = OptionSpec("--relaxer", value: "NAME", default: "fire", help: "relaxer: fire, fire-jaxmd, bfgs, lbfgs or frame")
    static let relaxerParam = OptionSpec("--relaxer-param", value: "name=value,…",
        help: "relaxer hyperparameters, e.g. dt=0.05,maxstep=0.1 (repeatable; names in relaxft relax --help)")
    static let fmax = OptionSpec("--fmax", value: "F", default: "0.01", help: "stop a relaxation once the force on every atom is below F (eV/Å)")
    static let steps = OptionSpec("--steps", value: "N", default: "500", help: "steps per structure or replica")

    // Training
    static let val = OptionSpec("--val", value: "FILE", help: "validation data (repeatable) instead of a random fraction of --data")
    static let valFraction = OptionSpec("--val-fraction", value: "F", default: "0.2",
        help: "fraction of --data held out for validation when no --val is given")
    static let test = OptionSpec("--test", value: "FILE", help: "held-out labelled frames scored at the end (repeatable)")
    static let epochs = OptionSpec("--epochs", value: "N", help: "training epochs (on --resume: a new budget)")
    static let lr = OptionSpec("--lr", value: "RATE", default: "0.001", help: "Adam learning rate")
    static let batch = OptionSpec("--batch", value: "N", default: "4", help: "structures per optimizer step")
    static let clip = OptionSpec("--clip", value: "NORM", default: "0", help: "clip the gradient's global norm (0: off)")
    static let schedule = OptionSpec("--schedule", value: "NAME", default: "constant", help: "learning-rate schedule: constant, cosine or plateau")
    static let patience = OptionSpec("--patience", value: "N", default: "0", help: "stop after N epochs without a better validation loss (0: never)")
    static let maxRejectedSteps = OptionSpec("--max-rejected-steps", value: "N", default: "10",
                                             help: "stop (exit 1, keeping the last good model) after N optimizer updates in a row were rejected: non-finite loss or gradient, or parameters out of range (0: never)")
    static let energyWeight = OptionSpec("--energy-weight", value: "W", default: "0", help: "weight of the energy-error term of the training loss")
    static let forceWeight = OptionSpec("--force-weight", value: "W", default: "0", help: "weight of the force-error term of the training loss")
    static let trainParams = OptionSpec("--train-params", value: "NAMES", help: "potential parameters to train, comma-separated")
    static let resume = OptionSpec("--resume", value: "RUN_DIR",
        help: "continue an interrupted run from its checkpoint, with the options stored in RUN_DIR/config.json")

    // Molecular dynamics
    static let temperature = OptionSpec("--temperature", value: "K", default: "300", help: "temperature of the thermostat, K")
    static let timestep = OptionSpec("--timestep", value: "FS", default: "1", help: "MD time step, fs")
    static let thermostat = OptionSpec("--thermostat", value: "NAME", default: "langevin",
        help: "langevin (BAOAB), nose-hoover (chain) or none (NVE, velocity Verlet)")
    static let friction = OptionSpec("--friction", value: "1/FS", default: "0.01", help: "Langevin friction γ, 1/fs")
    static let tdamp = OptionSpec("--tdamp", value: "FS", help: "Nosé–Hoover damping time, fs (default: 100 time steps)")
    static let chain = OptionSpec("--chain", value: "M", default: "3", help: "Nosé–Hoover chain length")
    static let replicas = OptionSpec("--replicas", value: "R", default: "1", help: "independent MD replicas advanced together in one batched force call")
    static let equilibrate = OptionSpec("--equilibrate", value: "N", default: "0", help: "MD steps run first and left out of what is measured")
    static let bondThreshold = OptionSpec("--bond-threshold", value: "Å", default: "0.5",
        help: "a replica is unstable once a bond of the starting structure deviates more than this from its starting length")
    static let bondCutoff = OptionSpec("--bond-cutoff", value: "Å", help: "bonds are pairs closer than this in the starting structure (default: 1.2 × the sum of covalent radii)")
    static let minDistance = OptionSpec("--min-distance", value: "Å", help: "also unstable when two atoms come closer than this")
    static let rdfRmax = OptionSpec("--rdf-rmax", value: "Å", default: "5", help: "largest radius of the RDF")
    static let rdfBins = OptionSpec("--rdf-bins", value: "N", default: "100", help: "radii of the RDF, bin centres (k + ½)·rmax/N")
    static let rdfSigma = OptionSpec("--rdf-sigma", value: "Å", default: "0.05", help: "Gaussian smearing of the RDF")

    // Structure files
    static let from = OptionSpec("--from", value: "FMT", help: "format of the input: extxyz, vasp or cif (default: from its name)")
    static let to = OptionSpec("--to", value: "FMT", help: "format of the output: extxyz or vasp (default: from its name)").alias("--format")
}
